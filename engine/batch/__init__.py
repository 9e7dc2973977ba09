"""Batches: many workflows × sweep combinations × repeats, in one session, resumable.

- `sources`: files, folders and PNGs → what to load, and each source's identity;
- `seeds`: control_after_generate, as the ComfyUI frontend applies it between queued runs;
- `jobs`: the job list, grouped by the model files the jobs load;
- `manifest`: `manifest.jsonl`, one line per finished job, and what a rerun may skip;
- `folder_lock`: one batch per output folder;
- `runner`: runs jobs through a Session, one result per job.
"""
from .folder_lock import FolderBusy, output_folder_lock
from .jobs import Job, plan_jobs
from .manifest import MANIFEST_NAME, Manifest, manifest_line
from .runner import JobResult, run_jobs
from .seeds import repeat_overrides
from .sources import expand_sources

__all__ = ["FolderBusy", "Job", "JobResult", "MANIFEST_NAME", "Manifest", "expand_sources", "manifest_line",
           "output_folder_lock", "plan_jobs", "repeat_overrides", "run_jobs"]
