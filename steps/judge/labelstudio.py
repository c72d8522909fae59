"""People label candidate sets in Label Studio; their choices come back as validated pairs.jsonl.

    make annotate                      # = python -m steps.judge.labelstudio serve --candidates data/<profile>/candidates
    python -m steps.judge.labelstudio serve --candidates DIR --train DIR [--port 8080]
    ONEREWARD_LABEL_STUDIO=http://127.0.0.1:8080/projects/1 make run SELECT='preference_pairs*'

`serve` starts Label Studio (its own virtual environment, ``.venv-labelstudio``: its pins clash with the
project's) on 127.0.0.1 with its sqlite store and media under ``.labelstudio/`` and local file serving
rooted at the data folder, creates an API token and a user non-interactively (kept in
``.labelstudio/credentials.json``, mode 600), creates a project whose labeling interface shows the
source, the mask, the prompt and the N candidates of a condition and asks, per dimension of its task, for
the best and the worst candidate, and imports every candidate set of ``preference_candidates``.

The way back is steps.judge.labelstudio_export: the project's export, read through the REST API, becomes pairs
(best beats every other candidate, every other beats worst, per dimension), validated first.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

LABEL_STUDIO_VERSION = "1.23.2"  # pinned: the export format and the API calls below were checked against it
REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VENV = REPO_ROOT / ".venv-labelstudio"
DATA_DIR = REPO_ROOT / ".labelstudio"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
PROJECT_TITLE = "OneReward preferences"
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def dimension_names() -> list[str]:
    from steps.world import DIMENSIONS

    return list(dict.fromkeys(d for dims in DIMENSIONS.values() for d in dims))


def labeling_config(n_candidates: int) -> str:
    """Label Studio XML: source, mask, prompt, N candidates; best and worst per dimension.

    Every dimension of every task is offered; the header names the ones of this condition's task, and
    the ingestion rejects an annotation that misses one of them or answers one that does not belong."""
    labels = LABELS[:n_candidates]
    cands = "\n".join(f'      <View style="display:inline-block;margin:4px"><Header value="{c}" size="5"/>'
                      f'<Image name="candidate_{c}" value="$candidate_{c}" width="192px"/></View>' for c in labels)
    choices = []
    for dim in dimension_names():
        title = dim.replace("_", " ")
        for side in ("best", "worst"):
            opts = "".join(f'<Choice value="{c}"/>' for c in labels)
            choices.append(f'    <Header value="{side} for {title}" size="6"/>\n'
                           f'    <Choices name="{side}_{dim}" toName="prompt" choice="single" showInline="true">'
                           f'{opts}</Choices>')
    return (f'<View>\n  <Header value="$header"/>\n  <Text name="prompt" value="$prompt"/>\n'
            f'  <View style="display:flex;gap:8px">\n'
            f'    <View><Header value="source" size="5"/><Image name="source" value="$source" width="192px"/></View>\n'
            f'    <View><Header value="mask (white = generated)" size="5"/>'
            f'<Image name="mask" value="$mask" width="192px"/></View>\n  </View>\n'
            f'  <View>\n{cands}\n  </View>\n' + "\n".join(choices) + "\n</View>\n")


def local_url(path: Path, document_root: Path) -> str:
    """The URL under which Label Studio's local file serving shows ``path`` (inside the document root)."""
    rel = Path(path).resolve().relative_to(document_root.resolve())
    return "/data/local-files/?d=" + quote(str(rel))


def tasks_from_candidates(candidates_dir: str | os.PathLike, train_dir: str | os.PathLike,
                          document_root: str | os.PathLike) -> list[dict[str, Any]]:
    """One Label Studio task per candidate set: image URLs for the interface, paths for the way back."""
    from steps.judge.candidates import read_candidate_sets
    from steps.manifest import read_manifest
    from steps.world import dimensions_for

    cdir, root = Path(candidates_dir).resolve(), Path(document_root).resolve()
    conditions = {c.id: c for c in read_manifest(Path(train_dir) / "manifest.jsonl")}
    tasks = []
    for cs in read_candidate_sets(cdir / "candidates.jsonl"):
        cond = conditions.get(cs["condition_id"])
        if cond is None:
            raise ValueError(f"{cdir / 'candidates.jsonl'}:{cs['line']}: field 'condition_id': no condition "
                             f"{cs['condition_id']!r} in {train_dir}")
        dims = dimensions_for(cond.task, cond.prompt)
        data = {"condition_id": cond.id, "task": cond.task, "prompt": cond.prompt or "(no prompt)",
                "header": f"{cond.task}: choose the best and the worst candidate for "
                          + ", ".join(d.replace("_", " ") for d in dims),
                "source": local_url(cond.image, root), "mask": local_url(cond.mask, root),
                "candidates": [str(Path(p).relative_to(cdir)) for p in cs["candidates"]]}
        for label, path in zip(LABELS, cs["candidates"]):
            data[f"candidate_{label}"] = local_url(path, root)
        tasks.append({"data": data})
    return tasks


# ---------------------------------------------------------------- the server and its REST API


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials(data_dir: Path) -> dict[str, str]:
    """The local user and API token, created once per data dir (mode 600; never logged to MLflow)."""
    path = data_dir / "credentials.json"
    if path.is_file():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    # hex: a url-safe token may start with "-", which label-studio's argument parser takes for an option
    creds = {"username": "annotator@localhost", "password": secrets.token_hex(12),
             "token": secrets.token_hex(20)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    return creds


class LabelStudioServer:
    """`label-studio start` from its own venv, bound to 127.0.0.1, sqlite + media in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike, document_root: str | os.PathLike, port: int = 0,
                 venv: str | os.PathLike = LS_VENV):
        self.data_dir, self.document_root = Path(data_dir).resolve(), Path(document_root).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.executable = Path(venv) / "bin" / "label-studio"
        self.creds = credentials(self.data_dir)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600, quiet: bool = True) -> LabelStudio:
        if not self.executable.exists():
            raise FileNotFoundError(f"{self.executable} not found: run `make labelstudio` (Label Studio "
                                    f"{LABEL_STUDIO_VERSION} in its own venv)")
        env = {**os.environ, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
               "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
               "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
               "FRONTEND_SENTRY_DSN": "", "DJANGO_DB": "sqlite"}
        cmd = [str(self.executable), "start", "--data-dir", str(self.data_dir), "--internal-host", "127.0.0.1",
               "--port", str(self.port), "--no-browser", f"--username={self.creds['username']}",
               f"--password={self.creds['password']}", f"--user-token={self.creds['token']}",
               "--enable-legacy-api-token"]
        log = open(self.data_dir / "server.log", "ab") if quiet else None  # noqa: SIM115 (lives with the server)
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT
                                     if quiet else None)
        client = LabelStudio(self.url, self.creds["token"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}; see {self.data_dir}/server.log")
            if client.ready():
                return client
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class LabelStudio:
    """The few REST calls the round trip needs (legacy token auth: ``Authorization: Token <key>``)."""

    def __init__(self, url: str, token: str):
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def ready(self) -> bool:
        import requests

        try:
            return self.session.get(f"{self.url}/api/projects", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _call(self, method: str, path: str, **kwargs) -> Any:
        r = self.session.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"Label Studio {method} {path}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def find_project(self, title: str) -> int | None:
        found = self._call("GET", "/api/projects", params={"title": title, "page_size": 1000})
        return next((p["id"] for p in found["results"] if p["title"] == title), None)

    def create_project(self, title: str, label_config: str, storage_root: Path) -> int:
        """A project plus a local-files storage at ``storage_root`` (what lets it serve those files)."""
        project = self._call("POST", "/api/projects", json={"title": title, "label_config": label_config,
                                                             "show_skip_button": True})
        self._call("POST", "/api/storages/localfiles", json={
            "project": project["id"], "path": str(Path(storage_root).resolve()), "title": "OneReward data",
            "use_blob_urls": False})
        return project["id"]

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int:
        return self._call("POST", f"/api/projects/{project}/import", json=tasks)["task_count"]

    def task_ids(self, project: int) -> list[int]:
        found = self._call("GET", "/api/tasks", params={"project": project, "page_size": 10000})
        return sorted(t["id"] for t in found["tasks"])

    def annotate(self, task: int, choices: dict[str, str], skipped: bool = False) -> int:
        """Submit an annotation as an annotator would: {"best_consistency": "A", ...}."""
        result = [{"from_name": name, "to_name": "prompt", "type": "choices", "value": {"choices": [value]}}
                  for name, value in choices.items()]
        return self._call("POST", f"/api/tasks/{task}/annotations", json={"result": result,
                                                                          "was_cancelled": skipped})["id"]

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task with its annotations (Label Studio's JSON export)."""
        return self._call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON",
                                                                           "download_all_tasks": "true"})


def open_project(client: LabelStudio, candidates_dir: str | os.PathLike, train_dir: str | os.PathLike,
                 data_root: str | os.PathLike, title: str = PROJECT_TITLE) -> tuple[int, int]:
    """(project id, tasks imported): the project for these candidate sets, created with its tasks once.

    ``data_root`` (data/<profile>) holds the images; the server's document root is its parent (Label Studio
    refuses a storage AT its document root)."""
    existing = client.find_project(title)
    if existing is not None:
        return existing, 0
    tasks = tasks_from_candidates(candidates_dir, train_dir, Path(data_root).resolve().parent)
    n = max(len(t["data"]["candidates"]) for t in tasks)
    project = client.create_project(title, labeling_config(n), Path(data_root))
    return project, client.import_tasks(project, tasks)


def serve(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m steps.judge.labelstudio serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", required=True, help="preference_candidates folder (candidates.jsonl)")
    p.add_argument("--train", required=True, help="the training conditions the candidates were sampled for")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--data-dir", default=str(DATA_DIR), help="Label Studio's sqlite store and media")
    args = p.parse_args(argv)
    root = Path(args.candidates).resolve().parent  # data/<profile>: candidates, train and their images
    server = LabelStudioServer(args.data_dir, root.parent, args.port)
    print(f"starting Label Studio {LABEL_STUDIO_VERSION} on {server.url} (first start migrates its database: "
          "a minute or two)...", flush=True)
    client = server.start(quiet=False)
    try:
        project, n = open_project(client, args.candidates, args.train, root)
        print(f"\nLabel Studio: {server.url}/projects/{project}  ({n} tasks imported now)\n"
              f"  log in as {server.creds['username']} / password {server.creds['password']}\n"
              f"  ({Path(args.data_dir) / 'credentials.json'})\n"
              f"When done, keep this running and ingest the labels, then retrain the judge:\n"
              f"  ONEREWARD_LABEL_STUDIO={server.url}/projects/{project} make run SELECT='preference_pairs*'\n"
              "Ctrl-C stops the server.", flush=True)
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        print("usage: python -m steps.judge.labelstudio serve --candidates DIR --train DIR [--port 8080]", file=sys.stderr)
        return 2
    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
