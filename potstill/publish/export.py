"""`potstill export DATASET@vN --to hf DIR [--push REPO]`: a version as a Hugging Face dataset repo.

The version already is one (its README.md is the dataset card whose `configs:` block points
the loader at `data/*.parquet`), so export copies it into a writable folder: the data, the
lineage files (manifest.json, report.html, validation.*) and the audit trail, rejected.parquet
and filtered.parquet (every input row that was not published, with its reason; the loader never
reads them). `audit_rows=False` (`--no-audit-rows`) leaves those two out, for a publisher who
does not mean to share the raw input of rejected rows. The card is written again from the
manifest and the data, saying which of the two the folder holds (and, for a version published
before cards had them, with the split sizes `datasets` needs).

`--push REPO` uploads that folder as a dataset repo with huggingface_hub. It runs only when asked
for; the token comes from the environment only (HF_TOKEN), never from the command line (shell
history, process lists), and is never printed: an error message that contains it is redacted.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from potstill.publish import card, versions

TOKEN_ENV = "HF_TOKEN"
FORMATS = ("hf",)
_LINEAGE = (versions.MANIFEST, "report.html", "validation.json", "validation.html")
AUDIT_ROWS = ("rejected.parquet", "filtered.parquet")


class ExportError(ValueError):
    """A problem with the export or push, phrased for the user (exit 2)."""


def export_hf(version_dir: str | os.PathLike, out_dir: str | os.PathLike,
              audit_rows: bool = True) -> Path:
    """Copy the version's data, lineage files and (`audit_rows`) rejected and filtered rows to
    out_dir (new or empty), with a card that says what the folder holds."""
    vdir, out = Path(version_dir), Path(out_dir)
    if not (vdir / card.CARD).is_file():  # versions published before cards existed
        raise ExportError(f"{vdir} has no dataset card ({card.CARD}): publish it again "
                          "with this potstill (a rerun of its config) to get one")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty: export writes a fresh folder")
    (out / "data").mkdir(parents=True, exist_ok=True)
    for f in sorted((vdir / "data").glob("*.parquet")):
        shutil.copyfile(f, out / "data" / f.name)  # copyfile: no read-only bits carried over
    for name in (*_LINEAGE, *(AUDIT_ROWS if audit_rows else ())):
        if (vdir / name).is_file():
            shutil.copyfile(vdir / name, out / name)
    card.write_card(vdir, out / card.CARD, audit_rows=audit_rows)
    return out


def push(folder: str | os.PathLike, repo: str, private: bool = True) -> str:
    """Upload `folder` as the dataset repo `repo`; returns its URL. Needs $HF_TOKEN."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ExportError(f"--push needs a Hugging Face token in ${TOKEN_ENV} "
                          "(it is read from the environment only)")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder),
                                 commit_message="potstill export")
    except Exception as err:  # noqa: BLE001 - offline, refused, bad repo: one clean message
        msg = str(err).replace(token, "***").strip().splitlines()
        raise ExportError(f"push to {repo} failed ({type(err).__name__}): "
                          f"{msg[0] if msg else 'no detail'}; the export in {folder} is complete") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/datasets/{repo}")
