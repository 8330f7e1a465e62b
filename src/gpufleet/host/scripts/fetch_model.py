"""Download one model snapshot into the HF hub cache; write the marker only when complete.

Uploaded to each host by the weights deploy and run there with huggingface_hub. The token is
read from a root-only file, so it never appears on a command line or in a log. An interrupted
download resumes on the next run (the hub keeps partial blobs), and vLLM units run with
HF_HUB_OFFLINE=1, so a model without its marker is never served half-downloaded.
"""

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--model", "--revision", "--cache-dir", "--marker"):
        p.add_argument(name, required=True)
    p.add_argument("--token-file")
    p.add_argument("--owner", help="user that runs the units: owns the downloaded tree")
    args = p.parse_args()
    from huggingface_hub import HfApi, snapshot_download

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    folder = Path(snapshot_download(args.model, revision=args.revision,
                                    cache_dir=args.cache_dir, token=token))
    info = HfApi().model_info(args.model, revision=args.revision, token=token)
    missing = [s.rfilename for s in info.siblings or [] if not (folder / s.rfilename).exists()]
    if missing:
        print(f"{args.model}: {len(missing)} file(s) missing after download: {missing[:5]}",
              file=sys.stderr)
        return 1
    if args.owner:
        repo_dir = Path(args.cache_dir) / ("models--" + args.model.replace("/", "--"))
        for path in [repo_dir, *repo_dir.rglob("*")]:
            os.chown(path, *_ids(args.owner), follow_symlinks=False)
    marker = Path(args.marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model": args.model, "revision": info.sha, "path": str(folder)}))
    os.replace(tmp, marker)
    print(f"{args.model}@{info.sha}: complete in {folder}")
    return 0


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


if __name__ == "__main__":
    sys.exit(main())
