"""Model pipeline jobs: a job row, the runner that claims and runs it, and its kinds.

``pipeline.jobs.steps`` holds the heavy work each kind does in a child process (torch,
transformers, llama.cpp's quantizer, optimum-intel, llm-compressor); that package imports
neither Django nor this one's database side, so it runs in any of the project's environments.
"""
