import pytest

from kling3_tools.domain import catalog
from kling3_tools.domain.catalog import Family, Mode, TaskType, Tier

# The price table of the API page, typed out again on purpose: the catalog must agree with it.
PAGE_PRICES = {
    "pro-text-to-video": (54, 80),
    "pro-image-to-video": (54, 80),
    "std-text-to-video": (40, 60),
    "std-image-to-video": (40, 60),
    "o3-pro-text-to-video": (48, 48),
    "o3-pro-image-to-video": (48, 48),
    "o3-pro-reference-to-video": (72, 72),
    "o3-std-text-to-video": (36, 36),
    "o3-std-image-to-video": (36, 36),
    "o3-std-reference-to-video": (20, 20),
}
PAGE_FIXED = {"o3-pro-video-edit": 435, "o3-std-video-edit": 360}


def test_twelve_types_in_page_order():
    assert [spec.type.value for spec in catalog.list_models(catalog.PRICES)] == [
        "pro-text-to-video",
        "pro-image-to-video",
        "std-text-to-video",
        "std-image-to-video",
        "o3-pro-text-to-video",
        "o3-pro-image-to-video",
        "o3-pro-reference-to-video",
        "o3-pro-video-edit",
        "o3-std-text-to-video",
        "o3-std-image-to-video",
        "o3-std-reference-to-video",
        "o3-std-video-edit",
    ]


@pytest.mark.parametrize(("type_", "rates"), PAGE_PRICES.items())
@pytest.mark.parametrize("duration", [3, 5, 15])
def test_per_second_prices_match_the_page(type_, rates, duration):
    spec = catalog.get_model(type_)
    silent, with_sound = rates
    assert catalog.PRICES[spec.type].credits(duration, sound=False) == silent * duration
    assert catalog.PRICES[spec.type].credits(duration, sound=True) == with_sound * duration


@pytest.mark.parametrize(("type_", "fixed"), PAGE_FIXED.items())
def test_edits_have_fixed_prices(type_, fixed):
    spec = catalog.get_model(type_)
    assert not spec.has_duration
    assert catalog.PRICES[spec.type].credits(3, True) == catalog.PRICES[spec.type].credits(15, False) == fixed


def test_page_example_costs_400_credits():
    assert catalog.PRICES[catalog.TaskType.PRO_TEXT_TO_VIDEO].credits(catalog.DEFAULT_DURATION, True) == 400


def test_classification():
    spec = catalog.get_model(TaskType.O3_STD_REFERENCE_TO_VIDEO)
    assert (spec.family, spec.tier, spec.mode) == (Family.O3, Tier.STD, Mode.REFERENCE)
    assert spec.task_id_prefix == "n71"
    spec = catalog.get_model("pro-image-to-video")
    assert (spec.family, spec.tier, spec.mode) == (Family.KLING_3, Tier.PRO, Mode.IMAGE)
    assert spec.task_id_prefix == "n75"


def test_field_rules():
    assert "cfg_scale" in catalog.get_model("std-text-to-video").accepted_fields
    assert "cfg_scale" not in catalog.get_model("o3-pro-text-to-video").accepted_fields
    assert "end_image" in catalog.get_model("o3-std-image-to-video").accepted_fields
    assert "images" not in catalog.get_model("o3-pro-image-to-video").accepted_fields
    assert catalog.get_model("o3-pro-video-edit").required_fields == {"prompt", "video"}
    assert catalog.get_model("pro-image-to-video").required_fields == {"prompt", "image"}


def test_unknown_type_names_the_known_ones():
    with pytest.raises(KeyError, match="pro-text-to-video"):
        catalog.get_model("ultra-text-to-video")
