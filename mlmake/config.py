"""Which remote a clone uses: the per-user `.mlmake/config.toml` over the Mlfile's remotes."""

from __future__ import annotations

import os

from mlmake.errors import MlfileError, UsageError, did_you_mean
from mlmake.mlfile import parse_config
from mlmake.model import Pipeline, RemoteSpec, UserConfig

CONFIG = "config.toml"  # per-user, in .mlmake/ (which Git ignores)
DISPLAY = os.path.join(".mlmake", CONFIG)  # how messages name it


def read_config(path: str) -> UserConfig:
    """Parse the per-user config at `path`; a missing file is an empty config."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return UserConfig()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MlfileError("the file is not UTF-8 text; fix or delete it.", DISPLAY) from None
    return parse_config(text, DISPLAY)


def remotes(pipeline: Pipeline, config: UserConfig) -> dict[str, RemoteSpec]:
    """The Mlfile's remotes with the per-user config's overrides and additions."""
    out = dict(pipeline.remotes)
    for name, spec in config.remotes.items():
        base = out.get(name)
        url = spec.url or (base.url if base else None)
        if url is None:
            raise MlfileError(f"[remote.{name}] needs a `url`: the Mlfile defines no remote "
                              f"'{name}' to override.", DISPLAY)
        options = dict(base.options if base else ())
        options.update(spec.options)
        out[name] = RemoteSpec(name, url, tuple(sorted(options.items())))
    return out


def choose(pipeline: Pipeline, config: UserConfig, name: str | None) -> RemoteSpec | None:
    """The remote to use: `name`, else the config's or the Mlfile's default, else the only
    one defined; None when there is none."""
    known = remotes(pipeline, config)
    chosen = name or config.remote or pipeline.remote
    if chosen is None:
        return next(iter(known.values())) if len(known) == 1 else None
    if chosen not in known:
        hint = f" Known: {', '.join(sorted(known))}." if known else \
            " Add a [remote.NAME] table with a url to the Mlfile or to .mlmake/config.toml."
        raise UsageError(f"no remote named '{chosen}'.{did_you_mean(chosen, list(known))}"
                         f"{hint}")
    return known[chosen]
