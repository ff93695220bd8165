"""The optional title and description of a task: the built-ins declare them, plugins may not."""

from __future__ import annotations

import attrs
import torch

from magvit.protocols import Condition, Task, task_description, task_problem, task_title
from magvit.tasks import ALL_TASKS, build_task, build_tasks
from tests.helpers.tasks import EverySecondPixel


def test_every_builtin_task_has_a_title_and_a_one_line_description():
    described = {t.name: (task_title(t), task_description(t)) for t in build_tasks(list(ALL_TASKS))}
    assert described == {
        "fp": ("frame prediction", "the first frame is given, the rest is generated"),
        "fi": ("frame interpolation", "the first and last frame are given, the frames between are generated"),
        "opc": ("central outpainting",
                "the central box (half the height and width) is given, the border around it is generated"),
        "opv": ("vertical outpainting",
                "the middle half of the columns is given, the left and right quarters are generated"),
        "oph": ("horizontal outpainting",
                "the middle half of the rows is given, the top and bottom quarters are generated"),
        "opd": ("dynamic outpainting",
                "a half-width vertical band sliding left to right is given, the rest is generated"),
        "ipc": ("central inpainting",
                "all but the central box (half the height and width) is given, the box is generated"),
        "ipd": ("dynamic inpainting",
                "all but a box (half the height and width) sliding left to right is given, the box is generated"),
        "cg": ("class-conditional generation", "only the class label is given, the whole clip is generated"),
        "cfp": ("class-conditional frame prediction",
                "the first frame and the class label are given, the rest is generated"),
    }


def test_descriptions_follow_the_number_of_condition_frames():
    assert [task_description(build_task(n, {"cond_frames": 5})) for n in ("fp", "fi", "cfp")] == [
        "the first 5 frames are given, the rest is generated",
        "the first and last 5 frames are given, the frames between are generated",
        "the first 5 frames and the class label are given, the rest is generated",
    ]


@attrs.frozen
class Undocumented:
    prompt: str = "undoc"
    name = "undoc"
    uses_class = False
    needs_video = True
    deterministic = True

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        mask = torch.ones(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        return Condition(video, mask)


def test_a_task_without_them_is_still_a_task_and_falls_back_to_name_and_docstring():
    plugin = EverySecondPixel()
    assert isinstance(plugin, Task) and task_problem(plugin) is None
    assert task_title(plugin) == "every2"
    assert task_description(plugin) == (
        "Keeps every 2nd pixel of every frame: under any supervoxel wider than one pixel, every token.")
    bare = Undocumented()
    assert isinstance(bare, Task) and task_problem(bare) is None
    assert (task_title(bare), task_description(bare)) == ("undoc", "")
