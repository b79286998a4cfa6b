from __future__ import annotations

from typing import Any

from inference.cache import ModelCache


class Sized:
    def __init__(self, name: str, size: int, log: list[str]) -> None:
        self.name, self.size, self.log = name, size, log

    def load(self) -> None:
        self.log.append(f"load {self.name}")

    def memory_bytes(self) -> int:
        return self.size

    def close(self) -> None:
        self.log.append(f"close {self.name}")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_model_is_loaded_once_and_reused() -> None:
    log: list[str] = []
    cache = ModelCache(max_bytes=100, idle_seconds=60)
    for _ in range(3):
        with cache.use(("a",), lambda: Sized("a", 10, log)) as backend:  # type: ignore[arg-type,return-value]
            assert backend.name == "a"  # type: ignore[attr-defined]
    assert log == ["load a"]


def test_the_least_recently_used_idle_model_is_evicted_to_stay_under_the_bound() -> None:
    log: list[str] = []
    cache = ModelCache(max_bytes=100, idle_seconds=60)

    def use(name: str) -> None:
        with cache.use((name,), lambda: Sized(name, 40, log)):  # type: ignore[arg-type,return-value]
            pass

    use("a"), use("b"), use("a"), use("c")
    assert log == ["load a", "load b", "close b", "load c"]
    assert sorted(k[0] for k in cache.loaded()) == ["a", "c"]


def test_a_model_in_use_is_never_evicted() -> None:
    log: list[str] = []
    cache = ModelCache(max_bytes=50, idle_seconds=60)
    with cache.use(("a",), lambda: Sized("a", 40, log)):  # type: ignore[arg-type,return-value]
        with cache.use(("b",), lambda: Sized("b", 40, log)):  # type: ignore[arg-type,return-value]
            assert "close a" not in log
    assert sorted(k[0] for k in cache.loaded()) == ["a", "b"]


def test_an_idle_model_is_unloaded_after_the_keep_alive(monkeypatch: Any) -> None:
    log: list[str] = []
    clock = Clock()
    cache = ModelCache(max_bytes=100, idle_seconds=300, clock=clock)
    monkeypatch.setattr(cache, "_start_sweeper", lambda: None)
    with cache.use(("a",), lambda: Sized("a", 10, log)):  # type: ignore[arg-type,return-value]
        clock.now = 1000
        assert cache.sweep() == 0  # in use
    clock.now = 1200
    assert cache.sweep() == 0
    clock.now = 1301
    assert cache.sweep() == 1
    assert log == ["load a", "close a"] and cache.loaded() == []
