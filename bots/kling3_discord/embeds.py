"""The embeds a task is shown with: one public embed rebuilt from the record at every change, and the
few a start can end in before there is a record."""

from __future__ import annotations

import discord

from kling3_tools.domain.records import DiscordOrigin, TaskRecord
from kling3_tools.domain.story_plan import Plan
from kling3_tools.domain.story_record import ShotState, StoryRecord

STATUS_COLOURS = {
    "queued": discord.Colour.light_grey(),
    "running": discord.Colour.blurple(),
    "succeeded": discord.Colour.green(),
    "failed": discord.Colour.red(),
    "timed_out": discord.Colour.orange(),
}


def task_embed(record: TaskRecord, *, expected_at: float | None = None) -> discord.Embed:
    status = record.display_status
    prompt = str(record.request.get("prompt", ""))
    embed = discord.Embed(
        title=f"Kling video · {status.replace('_', ' ')}",
        description=prompt if len(prompt) <= 300 else prompt[:297] + "…",
        colour=STATUS_COLOURS[status],
    )
    if isinstance(record.origin, DiscordOrigin):
        embed.add_field(name="Requested by", value=f"<@{record.origin.user_id}>")
    embed.add_field(name="Model", value=record.type)
    embed.add_field(name="Duration", value=f"{record.duration} s" if record.duration else "source video")
    embed.add_field(name="Aspect ratio", value=str(record.request.get("aspect_ratio", "source")))
    credits = record.consumed_credits if record.consumed_credits is not None else record.estimated_credits
    embed.add_field(name="Cost", value=str(credits))
    embed.add_field(name="Task id", value=f"`{record.task_id}`")
    if record.is_tracking and expected_at:
        embed.add_field(name="Expected", value=f"<t:{int(expected_at)}:R>")
    if record.video_url:
        embed.add_field(name="Video", value=record.video_url, inline=False)
    if record.error_message:
        embed.add_field(name="Reason", value=record.error_message[:1000], inline=False)
    return embed


def starting_embed(prompt: str, user_id: int) -> discord.Embed:
    embed = discord.Embed(title="Kling video · starting", description=prompt[:300], colour=discord.Colour.light_grey())
    embed.add_field(name="Requested by", value=f"<@{user_id}>")
    return embed


def unknown_embed(message: str) -> discord.Embed:
    return discord.Embed(
        title="Kling video · outcome unknown (may have been charged)",
        description=message[:4000],
        colour=discord.Colour.orange(),
    )


def not_started_embed(message: str) -> discord.Embed:
    return discord.Embed(title="Kling video · not started", description=message, colour=discord.Colour.red())


SHOT_MARKS = {
    ShotState.WAITING: "⏳",
    ShotState.SUBMITTING: "📤",
    ShotState.RUNNING: "🎬",
    ShotState.SUCCEEDED: "✅",
    ShotState.FAILED: "❌",
    ShotState.RELEASED: "↩️",
    ShotState.UNKNOWN: "⚠️",
}


def plan_text(story_plan: Plan, unit: str) -> str:
    """The plan as shown before Confirm: each step's shots and prices, the cut and the total."""
    title = story_plan.story.title or "Story"
    lines = [f"**{title}**: {len(story_plan.requests)} shots, **{story_plan.total} {unit}**"]
    for number, stage in enumerate(story_plan.stages, start=1):
        shots = ", ".join(f"`{shot}` ({story_plan.credits(shot)})" for shot in stage)
        lines.append(f"step {number}{' (at once)' if len(stage) > 1 else ''}: {shots}")
    lines.append(f"film: {' + '.join(story_plan.story.film)} ({story_plan.story.cut.transition})")
    return "\n".join(lines)[:1900]


def story_embed(record: StoryRecord) -> discord.Embed:
    """One embed for the whole story, rebuilt at every change."""
    status = record.state.value
    embed = discord.Embed(
        title=f"Kling story · {status}",
        description=(record.story.title or record.story_id)[:300],
        colour=STATUS_COLOURS[status],
    )
    if isinstance(record.origin, DiscordOrigin):
        embed.add_field(name="Requested by", value=f"<@{record.origin.user_id}>")
    embed.add_field(name="Cost", value=str(record.credits))
    embed.add_field(name="Story id", value=f"`{record.story_id}`")
    shots = [f"{SHOT_MARKS[shot.state]} `{i}` {shot.state.value}" for i, shot in record.shots.items()]
    embed.add_field(name="Shots", value="\n".join(shots)[:1000], inline=False)
    if record.note:
        embed.add_field(name="Reason", value=record.note[:1000], inline=False)
    if record.film_url:
        embed.add_field(name="Film", value=record.film_url, inline=False)
    return embed
