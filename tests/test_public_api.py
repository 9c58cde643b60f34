import kling3_tools


def test_all_is_sorted_and_importable():
    assert kling3_tools.__all__ == sorted(kling3_tools.__all__)
    for name in kling3_tools.__all__:
        assert getattr(kling3_tools, name) is not None


def test_every_error_descends_from_kling_error():
    errors = [getattr(kling3_tools, n) for n in kling3_tools.__all__ if n.endswith("Error")]
    assert len(errors) == 21
    assert all(issubclass(cls, kling3_tools.KlingError) for cls in errors)
