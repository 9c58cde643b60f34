import kling3_tools


def test_all_is_sorted_and_importable():
    assert kling3_tools.__all__ == sorted(kling3_tools.__all__)
    for name in kling3_tools.__all__:
        assert getattr(kling3_tools, name) is not None


def test_every_error_descends_from_kling_error():
    errors = {getattr(kling3_tools, n) for n in kling3_tools.__all__ if n.endswith("Error")}
    defined = {c for c in vars(kling3_tools.domain.errors).values() if isinstance(c, type) and issubclass(c, Exception)}
    assert errors == defined  # every error is exported
    assert len(errors) == 24
    assert all(issubclass(cls, kling3_tools.KlingError) for cls in errors)
