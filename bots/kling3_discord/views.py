"""The buttons under a finished video, and the edit dialog. Result buttons carry the task id in their custom
id, so they keep working after a restart (they are registered as dynamic items when the bot starts)."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any, ClassVar

import discord

from kling3_tools.domain import catalog
from kling3_tools.domain.catalog import TaskType
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import DiscordOrigin, TaskRecord

from .flow import flow_of


async def _owned_record(interaction: discord.Interaction, task_id: str) -> TaskRecord | None:
    """The task behind a result button, when the one who clicked is the one who asked; else refuse."""
    record = await flow_of(interaction.client).service.get(task_id)
    if record is None or not isinstance(record.origin, DiscordOrigin):
        await interaction.response.send_message("I no longer know this video.", ephemeral=True)
        return None
    if record.origin.user_id != interaction.user.id:
        await interaction.response.send_message(
            "Only the person who made this video can use its buttons.", ephemeral=True
        )
        return None
    return record


class TaskButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"kling3:(?P<action>reroll|edit|extend|lipsync):(?P<task_id>[0-9A-Za-z_-]+)",
):
    """Re-roll (same settings again: spends again, through the same checks), or a dialog that asks what to do
    with this video: Edit (an O3 edit), Extend (its next shot), Lip-sync (its speaker says a text). Only for
    the one who asked for the video; Extend and Lip-sync only where the provider offers them."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle]]] = {
        "reroll": ("Re-roll", discord.ButtonStyle.blurple),
        "edit": ("Edit", discord.ButtonStyle.grey),
        "extend": ("Extend", discord.ButtonStyle.grey),
        "lipsync": ("Lip-sync", discord.ButtonStyle.grey),
    }
    NEEDS: ClassVar[dict[str, TaskType]] = {"extend": TaskType.O3_STD_VIDEO_EXTEND, "lipsync": TaskType.LIP_SYNC}

    def __init__(self, action: str, task_id: str) -> None:
        label, style = self.LOOKS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"kling3:{action}:{task_id}"))
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TaskButton:
        return cls(match["action"], match["task_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        record = await _owned_record(interaction, self.task_id)
        if record is None:
            return
        if self.action == "reroll":
            await flow_of(interaction.client).start_video(interaction, GenerateRequest.fields_of(record.request))
        else:
            await interaction.response.send_modal(DIALOGS[self.action](record.task_id))


class _SourceDialog(discord.ui.Modal):
    """One text asked of the person, then a video made from this one (its `source_task`)."""

    answer: discord.ui.TextInput[_SourceDialog]
    type: ClassVar[TaskType]
    field: ClassVar[str]

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        fields = {"type": self.type.value, self.field: self.answer.value, "source_task": self.task_id}
        await flow_of(interaction.client).start_video(interaction, fields)


class EditModal(_SourceDialog, title="Edit this video"):
    answer = discord.ui.TextInput(label="What should change?", style=discord.TextStyle.paragraph, max_length=2000)
    type, field = TaskType.O3_STD_VIDEO_EDIT, "prompt"


class ExtendModal(_SourceDialog, title="Extend this video"):
    answer = discord.ui.TextInput(label="What happens next?", style=discord.TextStyle.paragraph, max_length=2000)
    type, field = TaskType.O3_STD_VIDEO_EXTEND, "prompt"


class LipSyncModal(_SourceDialog, title="Make them speak"):
    answer = discord.ui.TextInput(label="What do they say?", max_length=catalog.MAX_SPOKEN_CHARS)
    type, field = TaskType.LIP_SYNC, "text"


DIALOGS: dict[str, type[_SourceDialog]] = {"edit": EditModal, "extend": ExtendModal, "lipsync": LipSyncModal}


def result_view(task_id: str, offered: Container[TaskType]) -> discord.ui.View:
    """The buttons under a finished video: those whose kind of video the provider makes (`offered`)."""
    view = discord.ui.View(timeout=None)
    for action in TaskButton.LOOKS:
        if action not in TaskButton.NEEDS or TaskButton.NEEDS[action] in offered:
            view.add_item(TaskButton(action, task_id))
    return view
