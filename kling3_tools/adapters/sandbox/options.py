"""The sandbox's knobs, kept apart from the server so that reading config stays light."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxOptions(BaseModel):
    """The knobs; every one can be changed at run time through `POST /sandbox/options`."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = "sandbox-key"
    access_key: str = "sandbox-access"  # Kling's format: JWTs made with this pair are accepted
    secret_key: str = "sandbox-secret-for-kling-format-tokens"
    finish_seconds: float = Field(default=6.0, ge=0, description="How long a task runs.")
    finish_spread: float = Field(default=0.0, ge=0, le=1, description="Random +/- share of finish_seconds.")
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="Share of tasks that end FAILED.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of API requests answered 500.")
    rate_limit_per_second: float = Field(default=0.0, ge=0, description="API requests/s allowed; 0 = no limit.")
    rate_limit_burst: int = Field(default=10, ge=1)
    starting_balance: int = Field(default=100_000, ge=0)
    generate_delay: float = Field(
        default=0.0, ge=0, description="Hold each generate answer this long, after creating the task."
    )
    status_delay: float = Field(default=0.0, ge=0, description="Hold each status answer this long.")
    fetch_inputs: bool = Field(
        default=True, description="Fetch every input URL of a generate, as the API does; a failed fetch fails the task."
    )
    media_expire_seconds: float = Field(
        default=0, ge=0, description="Videos are gone this long after their task finished (0 = kept), as Kling's go."
    )
    # Hostile answers, to prove the clients survive them.
    task_id_template: str = Field(
        default="", description="Every new task id is this, {n} a counter (e.g. '../../x{n}'); empty: normal ids."
    )
    video_url_template: str = Field(
        default="", description="Successful tasks point here instead ({task_id} is filled in); empty: /media."
    )
    video_answer: Literal["video", "redirect", "redirect_loop", "empty", "html", "huge"] = Field(
        default="video", description="How /media answers: the clip, a redirect to it, or something hostile."
    )
    huge_video_mb: float = Field(default=2.0, gt=0, description="Size of the 'huge' answer, sent without a length.")
