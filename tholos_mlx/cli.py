"""The `tholos-mlx` command line; the only place that builds the engine, the gate and the app."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence, cast

from tholos_mlx import __version__
from tholos_mlx.config import SERVE_SETTINGS, Setting, Settings
from tholos_mlx.errors import UsageError
from tholos_mlx.rank_group import RankGroup, exit_when_broken, follow
from tholos_mlx.serve_start import Terminated, check_port, heartbeat, stop_on_sigterm

PROG = "tholos-mlx"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="state folder (default: $THOLOS_HOME, else the platform's data folder)",
    )


def _argparse_type(setting: Setting) -> Callable[[str], Any]:
    """The setting's parser, with its problem reported as argparse reports a bad value."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """The serve flags, one per row of config.Settings; launchd/systemd reuse them."""
    for s in SERVE_SETTINGS:
        help_ = f"{s.help} (default: {s.default_text()})"
        # default None everywhere: a flag not given must not hide config.toml's value.
        if s.kind.action == "store_true":
            p.add_argument(s.flag, dest=s.name, action="store_true", default=None, help=help_)
        else:
            p.add_argument(
                s.flag,
                dest=s.name,
                action=s.kind.action,
                type=_argparse_type(s),
                default=None,
                metavar=s.metavar,
                help=help_,
            )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with --help as the user manual."""
    parser = _Parser(
        prog=PROG,
        description="A private, local, OpenAI-compatible LLM server on MLX (127.0.0.1 only).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_home(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("serve", help="serve the OpenAI API on 127.0.0.1")
    add_serve_flags(p)
    _add_home(p)

    p = sub.add_parser("key", help="print the API key (created on first use)")
    p.add_argument("--rotate", action="store_true", help="replace the key with a new one")
    _add_home(p)

    p = sub.add_parser(
        "models",
        help="list installed models; add, scan for or remove model folders",
        description="Without ACTION: list the installed models, their tiers and what is loaded.",
    )
    _add_home(p)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    q = msub.add_parser(
        "add", help="register an MLX model folder in tiers.toml, without copying it"
    )
    q.add_argument("path", metavar="PATH", help="the folder: config.json, *.safetensors, tokenizer")
    q.add_argument("--id", required=True, dest="model_id", help="the OpenAI model id to give it")
    q.add_argument("--tier", default=None, help="tier name (default: unassigned)")
    _add_home(q)
    q = msub.add_parser(
        "scan", help="list MLX models in the Hugging Face cache and LM Studio's folder"
    )
    q.add_argument("--add", action="store_true", help="register those not registered yet")
    _add_home(q)
    q = msub.add_parser("remove", help="remove a model's entry from tiers.toml")
    q.add_argument("model_id", metavar="ID")
    q.add_argument(
        "--delete",
        action="store_true",
        help="also delete its folder (only one import-gguf made under models/)",
    )
    _add_home(q)

    p = sub.add_parser("cache", help="manage the prompt caches kept on disk")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    q = csub.add_parser("clear", help="delete the prompt caches on disk (of one model, or all)")
    q.add_argument("model_id", metavar="ID", nargs="?", default=None)
    _add_home(q)
    _add_home(p)

    p = sub.add_parser("import-gguf", help="convert a llama-family GGUF into an MLX model folder")
    p.add_argument("file", metavar="FILE", help="the .gguf file")
    p.add_argument(
        "--id", required=True, dest="model_id", help="the OpenAI model id to install it as"
    )
    p.add_argument("--tier", default=None, help="tier name for tiers.toml (default: unassigned)")
    p.add_argument("--force", action="store_true", help="replace an existing model with this id")
    _add_home(p)

    for name, what in (("launchd", "a macOS LaunchAgent"), ("systemd", "a systemd --user unit")):
        p = sub.add_parser(name, help=f"start the server at login with {what}")
        p.add_argument("action", choices=["install", "uninstall", "print"])
        add_serve_flags(p)
        _add_home(p)

    p = sub.add_parser("bench", help="tokens-per-second benchmark: raw mlx-lm beside the server")
    from tholos_mlx import bench

    bench.add_arguments(p)
    _add_home(p)
    return parser


def serve_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The serve flags the user gave, for config.build (None means not given)."""
    flags = {s.name: getattr(args, s.name, None) for s in SERVE_SETTINGS}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}


def _settings(args: argparse.Namespace, home: Path) -> Settings:
    from tholos_mlx import config

    return config.build(home, serve_flags(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    from tholos_mlx.home import resolve_home

    parser = build_parser()
    args = parser.parse_args(argv)
    level = os.environ.get("THOLOS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        try:
            home = resolve_home(getattr(args, "home", None))
        except RuntimeError as exc:  # "~nosuchuser": expanduser cannot resolve it
            raise UsageError(f"--home: {exc}") from None
        return _dispatch(args, home)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable home, a full disk: one line, never a traceback
        print(
            f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, home: Path) -> int:
    cmd = args.command
    if cmd == "key":
        from tholos_mlx.home import ensure_key, rotate_key

        print(rotate_key(home) if args.rotate else ensure_key(home))
        return 0
    if cmd == "models":
        from tholos_mlx import models

        action = args.models_command
        if action == "add":
            return models.add_command(home, args.path, args.model_id, args.tier)
        if action == "scan":
            return models.scan_command(home, os.environ, args.add)
        if action == "remove":
            return models.remove_command(
                home, args.model_id, args.delete, _settings(args, home).port
            )
        return models.print_models(home, _settings(args, home))
    if cmd == "cache":
        return _clear_cache(home, args.model_id, _settings(args, home).port)
    if cmd == "import-gguf":
        from tholos_mlx import gguf

        return gguf.import_command(Path(args.file), home, args.model_id, args.tier, args.force)
    if cmd == "serve":
        from tholos_mlx import launch

        settings = _settings(args, home)
        if settings.hostfile and not launch.launched():
            return _launch_group(settings, args)
        return _serve(settings)
    if cmd == "launchd":
        from tholos_mlx.service import launchd

        return launchd.command(args.action, _settings(args, home), serve_flags(args))
    if cmd == "systemd":
        from tholos_mlx.service import systemd

        return systemd.command(args.action, _settings(args, home), serve_flags(args))
    if cmd == "bench":
        from tholos_mlx import bench

        return bench.command(args, home)
    raise UsageError(f"unknown command {cmd!r}")


def _clear_cache(home: Path, model_id: str | None, port: int) -> int:
    from tholos_mlx import health
    from tholos_mlx.home import CACHE_DIR, clear_cache

    try:
        deleted = clear_cache(home, model_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    where = home / CACHE_DIR / (model_id or "")
    if not deleted:
        print(f"nothing to clear: no prompt cache in {where}")
    else:
        print(
            f"cleared {len(deleted)} prompt cache file{'s' if len(deleted) != 1 else ''} in {where}"
        )
    found = health.find(home, port, timeout=0.5)
    if found is not None:
        print(
            f"note: the server on port {found[0]} still holds its prompt cache in memory and writes "
            "it to disk again when it stops, unloads or switches models; stop it first "
            "(or clear again after it stops) for none to be left."
        )
    return 0


def _launch_group(settings: Settings, args: argparse.Namespace) -> int:
    """serve --hostfile: mlx.launch starts this same command on every host, as one rank each."""
    from tholos_mlx import health, launch
    from tholos_mlx.service.manager import flag_argv

    flags = {k: v for k, v in serve_flags(args).items() if k not in ("hostfile", "backend")}
    rank = [sys.executable, "-m", "tholos_mlx", "serve", "--home", str(settings.home)]
    assert settings.hostfile is not None
    hosts = launch.read_hosts(Path(settings.hostfile))  # a bad hostfile: one line, at once
    if settings.model:
        _check_splits(settings, len(hosts))
    check_port(settings.port)  # rank 0 listens here: fail in one line before any host starts
    home, port = settings.home, settings.port

    def alive() -> bool:  # rank 0 serves on this machine, with this home's key
        return health.of_home(home, port, timeout=launch.PROBE_TIMEOUT_S) is not None

    argv = [*rank, *flag_argv(flags)]
    return launch.run(Path(settings.hostfile), settings.backend, argv, alive)


def _check_splits(settings: Settings, ranks: int) -> None:
    """--model must split across the hosts: say so in one line before starting any of them."""
    from tholos_mlx.errors import ModelNotFound
    from tholos_mlx.sharding import mode_for
    from tholos_mlx.tiers import TierTable

    assert settings.model is not None
    try:
        entry = TierTable(settings.home).resolve(settings.model)
    except ModelNotFound:
        raise UsageError(
            f"--model {settings.model}: no such model or tier; `{PROG} models` lists them"
        ) from None
    try:
        mode_for(entry.path, ranks)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {settings.model}: {exc}") from None


def _serve(settings: Settings) -> int:
    """Build the engine thread, the admission gate and the app, then serve until a signal."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a model hub
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from tholos_mlx import address, answering, launch
    from tholos_mlx.admission import Gate
    from tholos_mlx.app import create_app
    from tholos_mlx.drafting import Mode
    from tholos_mlx.engine import Engine
    from tholos_mlx.home import KeyStore
    from tholos_mlx.model_slot import ModelSlot
    from tholos_mlx.tiers import TierTable
    from tholos_mlx.token_count import TokenCounter

    log = logging.getLogger("tholos.serve")
    tiers = TierTable(settings.home)
    keys = KeyStore(settings.home)
    group = RankGroup() if launch.launched() else None
    ranks = group.join() if group else None
    shards = group.shards() if group and ranks else None
    slot = ModelSlot(
        prompt_cache_mb=settings.prompt_cache_mb,
        memory_limit=round(settings.memory_limit * 2**30) if settings.memory_limit else None,
        kv_bits=settings.kv_bits,
        disk=_disk_cache(settings, shards.name if shards else None),
        shards=shards,
    )
    options = answering.Options(
        log_prompts=settings.log_prompts,
        default_max_tokens=settings.default_max_tokens,
        speculative=cast(Mode, settings.speculative),
        num_draft_tokens=settings.num_draft_tokens,
        draft=_draft_slot(settings, tiers) if settings.speculative == "draft" else None,
        timed=ranks is None,  # ranks draft alike: depth from what is accepted, not from timings
    )
    runner: Any = functools.partial(answering.answer, options=options)
    if ranks is not None and ranks.rank > 0:
        return follow(ranks, slot, runner)
    leader = group.lead(slot, runner) if group and ranks else None
    engine = Engine(
        leader or slot,
        leader.run if leader else runner,
        TokenCounter(slot),
        idle_unload=settings.idle_unload,
    )
    gate = Gate(max_queue=settings.max_queue, queue_timeout=settings.queue_timeout)
    check_port(settings.port)  # fail in one line before loading anything
    engine.start()
    code = 0
    try:
        with stop_on_sigterm():  # until app.run installs Sanic's own handlers
            if settings.model:
                _load_first(engine, tiers, settings.model)
        app = create_app(
            settings, engine, gate, tiers, keys, ranks=leader.health if leader else None
        )
        if leader is not None:
            exit_when_broken(app, leader, gate)

        async def _stopping(*_: Any) -> None:
            if leader is not None:
                leader.stopping()  # rank 0 stops the other ranks next: their silence is no failure
            gate.close()  # waiting requests get 503 now
            engine.begin_shutdown()  # the running one stops within a token

        async def _listening(*_: Any) -> None:
            address.publish(settings.home, settings.port)  # the CLI finds us on any port

        async def _withdraw(*_: Any) -> None:
            address.withdraw(settings.home)

        app.register_listener(_stopping, "before_server_stop")
        app.register_listener(_listening, "after_server_start")
        app.register_listener(_withdraw, "before_server_stop")
        log.info(
            "serving on http://127.0.0.1:%d/v1 (model: %s); the key is in %s",
            settings.port,
            engine.loaded or "none",
            settings.home / "api_key",
        )
        app.run(
            host="127.0.0.1",
            port=settings.port,
            single_process=True,
            access_log=False,
            motd=False,
            auto_reload=False,
        )
    except Terminated:
        log.info("stopped while loading the model")
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        print(f"{PROG}: error: cannot serve on 127.0.0.1:{settings.port}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception:
        # A crash must say why and exit non-zero, or launchd's KeepAlive Crashed and systemd's
        # Restart=on-failure take it for a clean stop and leave the server down.
        log.critical("serve crashed", exc_info=True)
        code = 1
    finally:
        address.withdraw(settings.home)  # also when Sanic never got to its stop listeners
        engine.stop()
        # Workaround (mlx 0.32 / mlx-lm 0.32 on Linux): a process that loaded a tokenizer off
        # the main thread can abort in C++ teardown at interpreter exit; state is on disk already.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _disk_cache(settings: Settings, part: str | None) -> Any:
    """The disk prompt cache under THOLOS_HOME/cache/ (a rank's in its own PART folder there),
    or None with --disk-cache-gb 0."""
    if settings.disk_cache_gb <= 0:
        return None
    from tholos_mlx.home import CACHE_DIR
    from tholos_mlx.prompt_cache_disk import DiskCache

    return DiskCache(settings.home / CACHE_DIR, round(settings.disk_cache_gb * 2**30), part)


def _draft_slot(settings: Settings, tiers: Any) -> Any:
    """--draft-model as a DraftSlot, refused in one line where it cannot draft for --model."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from tholos_mlx.draft_model import DraftSlot, same_vocabulary
    from tholos_mlx.errors import ModelNotFound

    name = settings.draft_model
    if not name:
        raise UsageError(
            "--speculative draft needs --draft-model ID: the small model that drafts "
            "(with the same tokenizer as the model that answers)"
        )
    try:
        entry = tiers.resolve(name)
    except ModelNotFound:
        raise UsageError(
            f"--draft-model {name}: no such model or tier; `{PROG} models` lists them"
        ) from None
    if settings.model:
        try:
            main = tiers.resolve(settings.model)
        except ModelNotFound:
            return DraftSlot(entry)  # --model's own error comes when it loads
        if not same_vocabulary(load_tokenizer(main.path), load_tokenizer(entry.path)):
            raise UsageError(
                f"--draft-model {entry.id} cannot draft for {main.id}: their tokenizers' "
                "vocabularies differ, so its tokens would mean other text"
            )
    return DraftSlot(entry)


def _load_first(engine: Any, tiers: Any, name: str) -> None:
    """Load --model before accepting requests, turning failures into one line."""
    from tholos_mlx.errors import ModelNotFound, TholosError
    from tholos_mlx.service.startup import LOADING_BEAT_S

    try:
        entry = tiers.resolve(name)
        logging.getLogger("tholos.serve").info("loading %s", entry.id)
        with heartbeat(f"loading {entry.id}", LOADING_BEAT_S):
            engine.load(entry)
    except ModelNotFound:
        raise UsageError(
            f"--model {name}: no such model or tier; `{PROG} models` lists them"
        ) from None
    except TholosError as exc:
        raise UsageError(f"--model {name}: {exc.message}") from None
