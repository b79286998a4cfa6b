// What the job dashboard knows, shared by its modules: the kinds, the jobs, the artifacts.

export const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

export const state = {
  kinds: {},
  jobs: new Map(), // id -> job payload
  artifacts: [],
  openLogs: new Set(), // job ids whose log is expanded
  madeAgents: new Map(), // artifact id -> slug made on this page
};

export function artifactById(id) {
  return state.artifacts.find((a) => a.id === id);
}

export function artifactLabel(id) {
  const a = artifactById(id);
  return a ? a.name : id == null ? "–" : `#${id}`;
}

/** The later of two payloads of one job (a job only moves forward: queued, running, ended). A
 * POST's answer or a REST read may arrive after a websocket event that is newer than it. */
export function later(known, incoming) {
  if (!known) return incoming;
  const rank = (j) => (FINISHED.has(j.status) ? 2 : j.status === "running" ? 1 : 0);
  if (rank(known) !== rank(incoming)) return rank(known) > rank(incoming) ? known : incoming;
  return (incoming.progress || 0) >= (known.progress || 0) ? incoming : known;
}
