"""model_version strings (labelstudio_backend/store/versions.py): engine id, memory revision, thresholds."""
from labelstudio_backend.store.versions import model_version, own_version_pattern, revision_of


def test_a_version_names_engine_revision_and_thresholds():
    base = model_version("fast-1234abcd", 7, 0.5, {"cat": 0.62})
    assert base.startswith("fast-1234abcd.r7-") and revision_of(base) == 7
    assert model_version("fast-1234abcd", 7, 0.5, {"cat": 0.62}) == base  # a function of its inputs
    assert model_version("fast-1234abcd", 7, 0.5, {"cat": 0.620000001}) == base  # float noise is no change
    others = {model_version("fast-1234abcd", 8, 0.5, {"cat": 0.62}), model_version("fast-1234abcd", 7, 0.6, {"cat": 0.62}),
              model_version("fast-1234abcd", 7, 0.5, {"cat": 0.63}), model_version("fast-1234abcd", 7, 0.5, {}),
              model_version("fast-1234abcd", 7, 0.5, {"dog": 0.62}), model_version("paper-1234abcd", 7, 0.5, {"cat": 0.62})}
    assert base not in others and len(others) == 6


def test_own_versions_are_recognised_in_both_forms():
    own = own_version_pattern("fast-1234abcd")
    assert own.match(model_version("fast-1234abcd", 3, 0.5, {}))
    assert own.match("fast-1234abcd.r3")  # written before the thresholds were named
    for other in ("fast-9999abcd.r3", "fast-1234abcd.r3-xyz", "fast-1234abcd.r", "human", "fast-1234abcd.r3-abcdef0"):
        assert not own.match(other), other
    assert revision_of("fast-1234abcd.r12") == 12 and revision_of("human") is None
