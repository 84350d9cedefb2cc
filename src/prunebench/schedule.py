"""Learning-rate schedules in the paper's standard form.

Two kinds, both with optional linear warm-up:

* **step** -- the string of the authors' code, ``"0:0.01,60:0.001,90:0.0001"``: ``epoch:lr``
  pairs; the LR of the largest key <= the current epoch applies. A bare number (``"0.01"``)
  is a constant LR (``"0:0.01"``).
* **cosine** -- ``"cosine:0.01:0.0001"``: from the start LR to the end LR over the stage's
  epochs, per epoch: ``end + (start - end) * (1 + cos(pi * e / E)) / 2``.

Warm-up is appended as ``";warmup=5"``: for the first 5 epochs the LR ramps linearly,
``lr(e) * (e + 1) / 5``. The canonical string (:meth:`Schedule.canonical`) is what runs
store, compare and print (and what run ids hash), so equal schedules always compare equal:

* a step key that repeats the LR before it is dropped (``"0:0.1,60:0.1"`` is ``"0:0.1"``),
* ``-0`` is ``0``, keys are plain integers (``"060"`` is ``60``), ``;warmup=0`` is dropped,
* LRs are written with Python's ``g`` format, 6 significant digits (a recipe's ``lr`` holds
  the canonical string, so ``0.1234567`` there runs as ``0.123457``); a canonical string
  is its own canonical form.

Numbers are ASCII only (``0-9``, ``.``, an exponent): ``"²"`` or ``"٣"`` are refused, never
read as digits. A step key beyond a stage's length is allowed and simply never reached
(``"0:0.01,500:0.001"`` on 120 epochs runs at 0.01 throughout); the key stays in the
canonical string, so such a schedule keeps its own id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prunebench.errors import ScheduleError

_FORMS = (
    "expected a step string like '0:0.01,60:0.001' (epoch:lr pairs, first key 0), "
    "a number, or 'cosine:START:END', optionally followed by ';warmup=N'"
)


def _ascii_int(token: str) -> bool:
    """``token`` is a whole number in ASCII digits (``str.isdigit`` alone also accepts
    ``"²"`` or ``"٣"``, which ``int`` refuses or reads as 3)."""
    return token.isascii() and token.isdigit()


def _num(token: str, what: str, spec: str) -> float:
    # float() also reads non-ASCII digits ("٣" -> 3.0) and "1_0": only plain ASCII numbers
    value: float | None = None
    if token.isascii() and "_" not in token:
        try:
            value = float(token)
        except ValueError:
            value = None
    if value is None:
        raise ScheduleError(f"bad {what} {token!r} in LR schedule {spec!r}: {_FORMS}")
    if not math.isfinite(value) or value < 0:
        raise ScheduleError(
            f"bad {what} {token!r} in LR schedule {spec!r}: must be a finite number >= 0"
        )
    return _zero(value)


def _zero(value: float) -> float:
    """``-0.0`` as ``0.0`` (they run the same; ``-0`` must not get its own canonical form)."""
    return 0.0 if value == 0 else value


@dataclass(frozen=True)
class Schedule:
    """A parsed LR schedule. ``steps`` for kind 'step'; ``start``/``end`` for 'cosine'."""

    kind: str  # "step" | "cosine"
    steps: tuple[tuple[int, float], ...] = ()
    start: float = 0.0
    end: float = 0.0
    warmup: int = 0

    def __post_init__(self) -> None:
        """Normalise however the schedule was built: ``-0.0`` is ``0.0`` and a step that
        repeats the LR before it is dropped (it changes nothing)."""
        steps: list[tuple[int, float]] = []
        for key, value in self.steps:
            value = _zero(value)
            if not steps or value != steps[-1][1]:
                steps.append((key, value))
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "start", _zero(self.start))
        object.__setattr__(self, "end", _zero(self.end))

    def lr_at(self, epoch: int, total_epochs: int) -> float:
        """The LR of (0-based) ``epoch`` in a stage of ``total_epochs`` epochs."""
        if self.kind == "step":
            lr = self.steps[0][1]
            for key, value in self.steps:
                if key <= epoch:
                    lr = value
                else:
                    break
        else:
            span = max(total_epochs, 1)
            lr = self.end + (self.start - self.end) * (1 + math.cos(math.pi * epoch / span)) / 2
        if self.warmup and epoch < self.warmup:
            lr *= (epoch + 1) / self.warmup
        return lr

    @property
    def initial_lr(self) -> float:
        return self.steps[0][1] if self.kind == "step" else self.start

    @property
    def final_lr(self) -> float:
        return self.steps[-1][1] if self.kind == "step" else self.end

    def first_stage(self, total_epochs: int, cosine_fraction: float = 0.25) -> tuple[int, int]:
        """``(start, n)``: the first LR stage of a ``total_epochs``-epoch stage (paper Eq. 1).

        Trainability accuracy averages the epochs of the first LR stage, which starts after
        warm-up: at 0-based epoch ``start = warmup`` (1-based epochs ``start + 1 .. start +
        n``). Warm-up epochs never count.

        * **step** -- the stage runs while the LR stays at its first post-warm-up value:
          ``n`` is the number of epochs from ``start`` until the first epoch whose LR
          *differs* (a key that repeats the same LR does not end the stage); a schedule whose
          LR never changes again gives all epochs left after warm-up.
        * **cosine** has no stages: ``ceil(cosine_fraction * total_epochs)`` epochs (a quarter
          by default), counted from ``start``, at least 1.

        ``n`` is at most the epochs left after warm-up, and 0 only when warm-up takes every
        epoch (there is then no first stage to measure).
        """
        if total_epochs < 0:
            raise ValueError(f"total_epochs={total_epochs!r} is invalid; expected an int >= 0")
        start = self.warmup
        left = max(total_epochs - start, 0)
        if left == 0:
            return start, 0
        if self.kind == "step":
            stage_lr = self.steps[0][1]
            end = total_epochs
            for key, value in self.steps:
                if key <= start:
                    stage_lr = value
                elif value != stage_lr:
                    end = key
                    break
            n = end - start
        else:
            n = math.ceil(cosine_fraction * total_epochs)
        return start, max(1, min(n, left))

    def first_stage_epochs(self, total_epochs: int, cosine_fraction: float = 0.25) -> int:
        """``n`` of :meth:`first_stage`: the length of the first LR stage (after warm-up)."""
        return self.first_stage(total_epochs, cosine_fraction)[1]

    def canonical(self) -> str:
        """The one string of this schedule (module docstring): equivalent schedules give the
        same string, and a canonical string parses back to itself."""
        if self.kind == "step":
            parts: list[tuple[int, str]] = []
            for k, v in self.steps:
                text = _fmt(v)
                if not parts or text != parts[-1][1]:  # equal once written: one stage
                    parts.append((k, text))
            text = ",".join(f"{k}:{v}" for k, v in parts)
        else:
            text = f"cosine:{_fmt(self.start)}:{_fmt(self.end)}"
        return text + (f";warmup={self.warmup}" if self.warmup else "")

    def scaled(self, factor: float) -> Schedule:
        """The same schedule with every epoch key multiplied by ``factor`` (Scratch-B)."""
        if self.kind != "step":
            return self
        steps = []
        for k, v in self.steps:
            key = round(k * factor)
            if steps and key <= steps[-1][0]:
                key = steps[-1][0] + 1
            steps.append((key, v))
        return Schedule("step", tuple(steps), warmup=self.warmup)

    def __str__(self) -> str:
        return self.canonical()


def _fmt(value: float) -> str:
    return f"{_zero(value):g}"


def parse_schedule(spec: Any) -> Schedule:
    """Parse a schedule from its string (or number, or mapping) form. Errors name the token."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, bool):
        raise ScheduleError(f"bad LR schedule {spec!r}: {_FORMS}")
    if isinstance(spec, int | float):
        spec = str(spec)
    if isinstance(spec, dict):
        return _parse_mapping(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ScheduleError(f"bad LR schedule {spec!r}: {_FORMS}")
    text = spec.replace(" ", "")
    warmup = 0
    if ";" in text:
        text, *options = text.split(";")
        for opt in options:
            key, sep, value = opt.partition("=")
            if key != "warmup" or not sep or not _ascii_int(value):
                raise ScheduleError(
                    f"bad option {opt!r} in LR schedule {spec!r}: only ';warmup=N' (N >= 0 epochs)"
                )
            warmup = int(value)
    if text.startswith("cosine"):
        parts = text.split(":")
        if len(parts) != 3 or parts[0] != "cosine":
            raise ScheduleError(f"bad cosine schedule {spec!r}: expected 'cosine:START:END'")
        start = _num(parts[1], "start LR", spec)
        end = _num(parts[2], "end LR", spec)
        return Schedule("cosine", start=start, end=end, warmup=warmup)
    steps: list[tuple[int, float]] = []
    if ":" not in text and "," not in text:
        return Schedule("step", ((0, _num(text, "LR", spec)),), warmup=warmup)
    for token in text.split(","):
        key, sep, value = token.partition(":")
        if not sep or not _ascii_int(key):
            raise ScheduleError(f"bad token {token!r} in LR schedule {spec!r}: {_FORMS}")
        epoch = int(key)
        if steps and epoch <= steps[-1][0]:
            raise ScheduleError(
                f"bad token {token!r} in LR schedule {spec!r}: epochs must increase"
            )
        if not steps and epoch != 0:
            raise ScheduleError(
                f"bad token {token!r} in LR schedule {spec!r}: the first key must be 0"
            )
        steps.append((epoch, _num(value, "LR", spec)))
    return Schedule("step", tuple(steps), warmup=warmup)


def _parse_mapping(spec: dict[str, Any]) -> Schedule:
    kind = spec.get("kind", "step")
    warmup = spec.get("warmup", 0)
    if kind == "cosine":
        text = f"cosine:{spec.get('start')}:{spec.get('end', 0)}"
    elif kind == "step":
        text = str(spec.get("steps", ""))
    else:
        raise ScheduleError(f"bad LR schedule kind {kind!r}: allowed 'step' or 'cosine'")
    return parse_schedule(f"{text};warmup={warmup}" if warmup else text)
