"""Checks of uploaded training data, and the training options (defaults and schema), answered by training
itself in a child process (`python -m training.inputs`): serving never imports training, and the file
formats and options are read by the very code that will train on them."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from serving.job_launcher import ROOT, child_env
from state.settings import Settings

TIMEOUT_S = 300.0


class InputsUnavailable(RuntimeError):
    """The child process crashed or timed out (-> 503): not the upload's fault."""


async def _run(settings: Settings, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "training.inputs", *args, cwd=str(ROOT),
                                                env=child_env(settings), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise InputsUnavailable(f"training.inputs {args[0]} took over {TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        raise InputsUnavailable(f"training.inputs {args[0]} exited {proc.returncode}: "
                                f"{err.decode(errors='replace')[-500:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def check(settings: Settings, kind: str, path: Path, name: str) -> dict[str, Any]:
    """{"ok": True, "stats": ...} or {"ok": False, "error": "<name>:<line>: problem"}."""
    return await _run(settings, "check", "--kind", kind, "--path", str(path), "--name", name)


async def options(settings: Settings) -> dict[str, Any]:
    """{"defaults": every training option's default, "schema": the options schema (JSON Schema)}."""
    return await _run(settings, "defaults")
