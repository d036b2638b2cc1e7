"""Configs <-> JSON dicts, for the fixture manifest (private to the conformance suite).

A block's or model's Config holds other Configs (s4_block.Config(ssm=s4d.Config(...))), which
json cannot store. The mapping: a spec Config becomes {"__config__": "<spec module>", <field>:
<value>, ...} with every field (nested Configs mapped the same way, recursively); plain dicts
(sequence_model's `ssm` / `block`, mamba_lm's `ssm_cfg`) and scalars stay as they are.

    to_dict(s4_block.Config(ssm=s4d.Config(d_model=2)))
      == {"__config__": "s4_block", "ssm": {"__config__": "s4d", "d_model": 2, ...}, ...}
    from_dict(to_dict(config)) == config

In cases.py a case's config is written in this form with only the fields it sets (the rest take
the Config's defaults); `from_dict(case.config, target)` builds it. (liquidssm.checkpoint's
config_to_dict / config_from_dict, written separately, serve the checkpoints; this one only needs
to round-trip the spec's Configs.)
"""

from __future__ import annotations

import dataclasses
import importlib

TAG = "__config__"


def _spec_module(name: str):
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{TAG}: expected the name of a liquidssm.spec module, got {name!r}")
    return importlib.import_module(f"liquidssm.spec.{name}")


def to_dict(config) -> dict:
    """The JSON form of a spec Config (every field; nested Configs tagged)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config: expected a liquidssm.spec Config instance, got {config!r}")
    module = type(config).__module__
    if not module.startswith("liquidssm.spec."):
        raise TypeError(f"config: expected a liquidssm.spec Config, got {type(config)!r}")
    out = {TAG: module.rsplit(".", 1)[1]}
    for f in dataclasses.fields(config):
        out[f.name] = _value_to_json(getattr(config, f.name))
    return out


def _value_to_json(v):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, dict):
        return {k: _value_to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_value_to_json(x) for x in v]
    return v


def from_dict(d: dict, target: str | None = None):
    """The Config of a JSON dict: liquidssm.spec.<d["__config__"] or target>.Config(**fields),
    nested tagged dicts built first."""
    if not isinstance(d, dict):
        raise TypeError(f"config: expected a dict, got {type(d).__name__}")
    name = d.get(TAG, target)
    if name is None:
        raise ValueError(f"config: expected a {TAG!r} key (the spec module) or a target, got "
                         f"{sorted(d)}")
    if target is not None and TAG in d and d[TAG] != target:
        raise ValueError(f"config: {TAG} is {d[TAG]!r}, expected {target!r}")
    return _spec_module(name).Config(**fields(d))


def fields(d: dict) -> dict:
    """The keyword arguments of a Config from its JSON form (nested Configs built, the tag
    dropped)."""
    return {k: _value_from_json(v) for k, v in d.items() if k != TAG}


def _value_from_json(v):
    if isinstance(v, dict):
        return from_dict(v) if TAG in v else {k: _value_from_json(x) for k, x in v.items()}
    return v


def tagged(module: str, **fields) -> dict:
    """{"__config__": module, **fields}: a nested Config in a case's config."""
    return {TAG: module, **fields}
