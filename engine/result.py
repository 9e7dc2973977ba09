"""`RunResult`: what one run produced, and its `--json` report (schemas.RunReport)."""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas import RunReport

from .errors import NodeError
from .file_hashes import FileStamp, stamp_file
from .node import NodeOutput, SavedFiles


@dataclass
class NodeRecord:
    node_id: str
    type: str
    title: str | None
    status: str  # executed | cached (memory) | disk | skipped
    seconds: float = 0.0
    bytes: int = 0  # the output's size in the disk cache


@dataclass
class RunResult:
    """What one run produced. `status` is ok, invalid (bad input) or failed (runtime error)."""

    source: str | None
    status: str
    outputs: dict[str, NodeOutput] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # written by this run
    stamps: dict[str, FileStamp] = field(default_factory=dict)  # of those files, taken as they were written
    errors: list[NodeError] = field(default_factory=list)
    warnings: list[NodeError] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # {node id: what it recorded}
    provenance: dict = field(default_factory=dict)  # engine version, seeds, model file hashes
    seconds: float = 0.0

    @property
    def executed(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.status == "executed"]

    @property
    def cached(self) -> list[str]:
        """Nodes whose output came from a cache, in memory or on disk."""
        return [n for n, r in self.nodes.items() if r.status in ("cached", "disk")]

    @property
    def from_disk(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.status == "disk"]

    @property
    def file_stamps(self) -> dict[str, FileStamp]:
        """{path: (bytes, mtime_ns, sha256)} of every file the output nodes stand for: written by
        this run, or by an earlier one and found intact."""
        stamps: dict[str, FileStamp] = {}
        for output in self.outputs.values():
            if isinstance(output, SavedFiles):
                stamps.update(zip(output.files, output.stamps))
        for path in self.files:
            if path not in stamps:
                stamps[path] = self.stamps.get(path) or stamp_file(path)
        return stamps

    @property
    def output_files(self) -> list[str]:
        return list(self.file_stamps)

    def file_reports(self, with_mtime: bool = False) -> list[dict]:
        """One dict per output file: path, bytes, sha256 (+ mtime_ns), reused when not rewritten."""
        return [{"path": path, "bytes": size, "sha256": digest, **({"mtime_ns": mtime} if with_mtime else {}),
                 **({} if path in self.files else {"reused": True})}
                for path, (size, mtime, digest) in self.file_stamps.items()]

    def to_report(self, job: str | None = None) -> RunReport:
        def problems(items: list[NodeError]) -> list[dict]:
            return [{k: v for k, v in e.to_dict().items() if k != "file"} for e in items]
        return RunReport(
            file=self.source or "<graph>", status=self.status, job=job, errors=problems(self.errors),
            warnings=problems(self.warnings),
            nodes={n: {"type": r.type, "title": r.title, "status": r.status, "seconds": round(r.seconds, 6),
                       "bytes": r.bytes} for n, r in self.nodes.items()},
            files=self.file_reports(), seconds=round(self.seconds, 6))


def failed_result(source: str | None, exc: BaseException) -> RunResult:
    """A result for a run that broke outside any node (a bug, a full disk): status failed."""
    return RunResult(source, "failed", errors=[NodeError(f"internal error: {type(exc).__name__}: {exc}",
                                                         kind="internal_error", file=source)])
