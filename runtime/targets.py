"""Board profiles: the microcontrollers a quantized GRU is checked against.

A target is a TOML file (``runtime/targets/<part>.toml``, or a user's own path) with the fields of
:class:`Target`: clock, flash, RAM, the cycles-per-instruction estimate used for latency (whose origin the
TOML states) and, where QEMU emulates the core, the machine that measures it. ``budget`` checks a model's
figures against a target; ``cost_model`` estimates them where nothing can be measured.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grukit.core.errors import BadInputError

TARGETS_DIR = Path(__file__).resolve().parent / "targets"

_REQUIRED = {
    "name": str, "core": str, "clock_hz": int, "flash_bytes": int, "ram_bytes": int,
    "cycles_per_instruction": float, "cycles_per_instruction_source": str, "notes": str,
}
_OPTIONAL = {"qemu_machine": str}
# What a microcontroller's figures can be: a value outside is a typo (a clock in MHz, flash in KB) or a broken file.
_PLAUSIBLE = {
    "clock_hz": (1e5, 1e10, "clock in Hz"),
    "flash_bytes": (1024, 1 << 36, "flash size in bytes"),
    "ram_bytes": (1024, 1 << 36, "RAM size in bytes"),
    "cycles_per_instruction": (0.1, 100.0, "cycles per instruction"),
}
QEMU_MACHINES = ("mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547", "microbit", "virt")


@dataclass(frozen=True)
class Target:
    """One board: clock, memories and the cycles-per-instruction estimate used for latency."""

    name: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    cycles_per_instruction: float
    cycles_per_instruction_source: str
    notes: str
    qemu_machine: str | None = None
    path: str = ""


def list_targets() -> list[str]:
    """Names of the targets shipped with grukit, sorted."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def _validate(raw: dict, where: str) -> Target:
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        known = [*_REQUIRED, *_OPTIONAL]
        hints = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(k, known, 1)) else k
                 for k in unknown]
        raise BadInputError(f"{where}: unknown target field(s) {', '.join(hints)}")
    missing = sorted(set(_REQUIRED) - set(raw))
    if missing:
        raise BadInputError(f"{where}: missing target field(s) {', '.join(missing)}")
    fields = {}
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in raw:
            continue
        value = raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML writes 2 for 2.0
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadInputError(f"{where}: field {key} must be a {kind.__name__}, got {value!r}")
        fields[key] = value
    for key, (lo, hi, what) in _PLAUSIBLE.items():
        if not (math.isfinite(fields[key]) and lo <= fields[key] <= hi):
            raise BadInputError(f"{where}: field {key} = {fields[key]!r} is not a plausible {what} "
                                f"({lo:g} to {hi:g})")
    machine = fields.get("qemu_machine")
    if machine is not None and machine not in QEMU_MACHINES:
        raise BadInputError(f"{where}: qemu_machine {machine!r} is not one of {', '.join(QEMU_MACHINES)}")
    return Target(**fields, path=where)


def load_target(name_or_path: str | Path) -> Target:
    """A shipped target by name (case-insensitive, e.g. ``"stm32l476"``) or a user's TOML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.exists():
        if not path.is_file():
            raise BadInputError(f"{path}: no such target file")
    else:
        path = TARGETS_DIR / f"{text.lower()}.toml"
        if not path.is_file():
            raise BadInputError(f"unknown target {text!r}; known targets: {', '.join(list_targets())} (or give a .toml path)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: not valid TOML ({e})") from None
    return _validate(raw, str(path))
