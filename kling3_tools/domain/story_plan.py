"""Planning a story before anything is spent: every shot checked against the catalog (every problem of every
shot at once), references known and of the right kind, no cycle; then the order (stages of shots that can
run at once) and the price of each shot and of the whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from .catalog import PRICES, Prices
from .errors import RequestValidationError
from .models import GenerateRequest
from .story import Shot, Story
from .url_fields import url_label, with_urls

STAND_IN = "https://story.invalid/{shot}{suffix}"  # a referenced input, until its shot has run


@dataclass(frozen=True)
class Plan:
    story: Story
    requests: dict[str, GenerateRequest]  # with stand-ins for references
    stages: list[list[str]]  # each stage's shots need only earlier stages
    prices: Prices = dataclasses.field(default_factory=lambda: PRICES)

    def credits(self, shot_id: str) -> int:
        return self.requests[shot_id].estimated_credits(self.prices)

    @property
    def dearest(self) -> int:
        """The price of its dearest shot: what the per-video limits judge."""
        return max(request.estimated_credits(self.prices) for request in self.requests.values())

    @property
    def total(self) -> int:
        return sum(request.estimated_credits(self.prices) for request in self.requests.values())

    def dependencies(self, shot_id: str) -> set[str]:
        return {reference.shot for _, _, reference in self.story.references(self.story.shot(shot_id))}


def plan(story: Story, prices: Prices = PRICES, takes: Collection[str] | None = None) -> Plan:
    """The plan, or `RequestValidationError` listing every problem of the story; `prices` and `takes` (the
    request fields its format has; None: every one) are the configured provider's."""
    problems: list[str] = []
    ids = [shot.id for shot in story.shots]
    problems += [f"shot id `{shot_id}` is used twice" for shot_id in sorted({i for i in ids if ids.count(i) > 1})]
    requests = {}
    for shot in story.shots:
        shot_problems, request = _check_shot(story, shot, set(ids))
        problems += shot_problems
        if request is not None:
            requests[shot.id] = request
    for shot_id, request in requests.items():
        missing = [f"`{request.type}`"] if request.type not in prices else []
        missing += [f"`{name}`" for name in sorted(set(request.recorded()) - {"type"}) if takes and name not in takes]
        problems += [f"shot `{shot_id}`: {name} is not offered by the configured provider" for name in missing]
    problems += [f"[cut] names `{shot_id}`, which is not a shot" for shot_id in story.film if shot_id not in ids]
    if not story.film:
        problems.append("[cut] shots is empty: the film needs at least one shot")
    stages, stuck = _stages(story)
    if stuck:
        problems.append(f"the shots {', '.join(f'`{s}`' for s in sorted(stuck))} depend on each other in a cycle")
    if problems:
        raise RequestValidationError(problems)
    return Plan(story, requests, stages, prices)


def _check_shot(story: Story, shot: Shot, ids: set[str]) -> tuple[list[str], GenerateRequest | None]:
    problems = []
    stand_ins = {}
    for field, index, reference in story.references(shot):
        where = url_label(field, index)
        if reference.shot not in ids:
            problems.append(f"shot `{shot.id}`: `{where}` names `{reference}`, and there is no shot `{reference.shot}`")
        elif reference.shot == shot.id:
            problems.append(f"shot `{shot.id}`: `{where}` names the shot itself")
        elif field == "video" and reference.still:
            problems.append(
                f"shot `{shot.id}`: `video` needs a video; `{reference}` is a still (use `@{reference.shot}`)"
            )
        elif field != "video" and not reference.still:
            problems.append(
                f"shot `{shot.id}`: `{where}` needs an image; `{reference}` is a video "
                f"(use `@{reference.shot}.last_frame` or `.first_frame`)"
            )
        stand_ins[(field, index)] = STAND_IN.format(shot=reference.shot, suffix=".png" if reference.still else ".mp4")
    try:
        return problems, GenerateRequest.build(**with_urls(story.fields(shot), stand_ins))
    except RequestValidationError as exc:
        return problems + [f"shot `{shot.id}`: {problem}" for problem in exc.problems], None


def _stages(story: Story) -> tuple[list[list[str]], set[str]]:
    """Kahn's layering: each stage holds the shots whose inputs all come from earlier stages; what is left
    over is in a cycle (references to unknown shots are reported elsewhere and ignored here)."""
    ids = {shot.id for shot in story.shots}
    needs = {
        shot.id: {r.shot for _, _, r in story.references(shot) if r.shot in ids and r.shot != shot.id}
        for shot in story.shots
    }
    stages: list[list[str]] = []
    done: set[str] = set()
    while ready := [shot.id for shot in story.shots if shot.id not in done and needs[shot.id] <= done]:
        stages.append(ready)
        done |= set(ready)
    return stages, ids - done
