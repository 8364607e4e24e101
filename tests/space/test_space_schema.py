"""Space files: the shipped spaces load, the paper models are members, bad input is explained."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fcasearch.models import PAPER_DROP_PATH, get_spec
from fcasearch.space import SearchSpace, SpaceError, list_shipped_spaces, load_space
from fcasearch.space.loading import shipped_spaces_dir

SHIPPED = ["fcaformer_imagenet", "micro", "mobile"]
PAPER = ["fcaformer_l1", "fcaformer_l2", "fcaformer_l3", "fcaformer_l4"]


def _micro() -> dict:
    return yaml.safe_load((shipped_spaces_dir() / "micro.yaml").read_text())


def _load_bad(tmp_path: Path, data: dict | str, name: str = "bad.yaml") -> str:
    """Write ``data`` to a file, load it, and return the SpaceError message."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    return str(info.value)


# ---- shipped spaces -------------------------------------------------------------------------------
def test_shipped_spaces_are_listed():
    assert list_shipped_spaces() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads(name):
    by_name = load_space(name)
    by_path = load_space(shipped_spaces_dir() / f"{name}.yaml")
    assert isinstance(by_name, SearchSpace)
    assert by_name.name == by_path.name == name
    assert by_name.definition.source == f"{name}.yaml"
    assert by_name.cardinality() == by_path.cardinality() > 1000
    assert by_name.parameters()  # something is searched
    assert by_name.to_dict()["stages"]


def test_micro_fits_the_quickstart_data():
    space = load_space("micro")
    assert (space.in_chans, space.num_classes, space.img_size) == (1, 10, 32)
    assert set(space.definition.conv_stages.values) <= {1, 2}
    widths = [w for st in space.definition.stages for w in st.choices["width"].values]
    assert 8 <= min(widths) and max(widths) <= 48
    assert space.constraints.max_params is not None


@pytest.mark.parametrize("model", PAPER)
def test_paper_models_are_members_of_the_imagenet_space(model):
    space = load_space("fcaformer_imagenet")
    spec = get_spec(model)
    assert space.contains(spec), space.why_not(spec)
    assert spec in space
    assert not space.constraints.check_closed_form(spec)


def test_l1_is_a_member_of_the_mobile_space_and_meets_its_limits():
    space = load_space("mobile")
    spec = get_spec("fcaformer_l1")
    assert space.contains(spec), space.why_not(spec)
    assert not space.constraints.check_closed_form(spec)
    assert space.constraints.max_macs == 2_000_000_000 and space.constraints.max_params == 8_000_000


def test_paper_drop_path_is_outside_the_space():
    space = load_space("fcaformer_imagenet")
    spec = get_spec("fcaformer_l2", drop_path_rate=PAPER_DROP_PATH["fcaformer_l2"])
    assert not space.contains(spec)
    assert "drop_path_rate" in space.why_not(spec)


def test_load_from_a_dict_names_the_source():
    data = _micro()
    assert load_space(data).definition.source == "<dict>"
    data["stages"][0]["widht"] = 8
    with pytest.raises(SpaceError, match=r"^mine\.yaml: stages\[0\]\.widht: "):
        load_space(data, source="mine.yaml")


# ---- one test per kind of bad input ----------------------------------------------------------------
def test_unknown_key_suggests_the_close_match(tmp_path):
    data = _micro()
    data["stages"][2]["hedas"] = 2
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: stages[2].hedas: unknown key")
    assert "did you mean 'heads'?" in msg


def test_unknown_top_level_key_suggests_the_close_match(tmp_path):
    data = _micro()
    data["constraint"] = data.pop("constraints")
    msg = _load_bad(tmp_path, data)
    assert (
        msg.startswith("bad.yaml: constraint: unknown key") and "did you mean 'constraints'?" in msg
    )


def test_wrong_type_names_what_is_expected(tmp_path):
    data = _micro()
    data["stages"][1]["depth"] = "two"
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: stages[1].depth: 'two' (str) is not an integer")
    assert "expected an integer >= 1" in msg


def test_wrong_type_inside_a_list_names_the_item(tmp_path):
    data = _micro()
    data["defaults"]["enhancement"] = [True, "no"]
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: defaults.enhancement[1]: 'no' (str) is not true or false")


def test_empty_choice_is_an_error(tmp_path):
    data = _micro()
    data["stages"][0]["width"] = []
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: stages[0].width: empty choice list; give at least one value")


def test_range_with_low_above_high_says_swap(tmp_path):
    data = _micro()
    data["stages"][3]["depth"] = {"low": 3, "high": 1}
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: stages[3].depth: range low 3 > high 1; swap them")


def test_heads_that_do_not_divide_every_width_choice(tmp_path):
    data = _micro()
    del data["defaults"]["head_dim"]
    data["defaults"]["heads"] = [1, 2]
    data["stages"][2]["heads"] = [2, 3]
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: stages[2].heads: 3 does not divide width 16")
    assert "[1, 2, 4, 8]" in msg  # the common divisors of 16, 24, 32
    assert "head_dim" in msg


def test_head_dim_that_does_not_divide_every_width_choice(tmp_path):
    data = _micro()
    data["defaults"]["head_dim"] = 16
    msg = _load_bad(tmp_path, data)
    assert msg.startswith("bad.yaml: defaults.head_dim: 16 does not divide width 24")


# ---- other mistakes the schema catches --------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "start", "fix"),
    [
        (
            lambda d: d["stages"][2].update(tme=[0, 1]),
            "stages[2].tme: [0, 1] reads as",
            "tme: [[0, 1]]",
        ),
        (
            lambda d: d["stages"][2].update(tme=[[0, 2]]),
            "stages[2].tme: block 2 cannot emit",
            "raise",
        ),
        (
            lambda d: d["stages"][2].update(merge_stride=2),
            "stages[2].merge_stride: merge_stride is shared",
            "remove",
        ),
        (
            lambda d: d["stages"][0].update(heads=2),
            "stages[0].heads: stage 0 is never an fca stage",
            "remove",
        ),
        (lambda d: d["stages"][0].update(width=[8, 9]), "stages[0].width: 9 is odd", "even"),
        (lambda d: d.update(img_size=40), "img_size: 40 is not a multiple of 32", "e.g. 32"),
        (
            lambda d: d.update(conv_stages=[1, 5]),
            "conv_stages: 5 is more than the 4 stages",
            "0..4",
        ),
        (
            lambda d: d.update(num_classes=[10, 100]),
            "num_classes: [10, 100]: num_classes is fixed",
            "one integer",
        ),
        (
            lambda d: d.update(share=["merge_strid"]),
            "share[0]: 'merge_strid' is not a stage key",
            "'merge_stride'",
        ),
        (
            lambda d: d.update(share=["merge_stride", "depth"]),
            "share[1]: 'depth' is shared but defaults",
            "defaults.depth",
        ),
        (
            lambda d: d["stages"][1].update(depth={"low": 1, "high": 4, "step": 2}),
            "stages[1].depth: range 1..4",
            "high: 3",
        ),
        (
            lambda d: d["stages"][1].update(depth={"low": 1, "hihg": 4}),
            "stages[1].depth: unknown key 'hihg'",
            "'high'",
        ),
        (
            lambda d: d["stages"][1].update(mlp_ratio={"low": 1, "high": 4}),
            "stages[1].mlp_ratio: an integer range",
            "a list",
        ),
        (
            lambda d: d["stages"][1].update(width=[16, 16]),
            "stages[1].width[1]: 16 is listed twice",
            "once",
        ),
        (
            lambda d: d["defaults"].update(heads=2),
            "defaults.heads: both heads and head_dim",
            "keep one",
        ),
        (lambda d: d["stages"][3].pop("width"), "stages[3].width: missing", "defaults"),
        (lambda d: d.pop("conv_stages"), "conv_stages: missing", "conv_stages: [1, 2]"),
        (
            lambda d: d["defaults"].update(tme=["every:0"]),
            "defaults.tme[0]: 'every:0'",
            "integer >= 1",
        ),
        (
            lambda d: d["defaults"].update(tme="all_but_lst"),
            "defaults.tme: 'all_but_lst' is not",
            "'all_but_last'",
        ),
        (
            lambda d: d["constraints"].update(max_parms=5),
            "constraints.max_parms: unknown key",
            "'max_params'",
        ),
        (
            lambda d: d["constraints"].update(max_params=-5),
            "constraints.max_params: -5 must be",
            "positive",
        ),
        (
            lambda d: d["constraints"].update(device="tpu"),
            "constraints.device: 'tpu' is not a device",
            "cuda",
        ),
    ],
)
def test_other_mistakes_name_the_path_and_the_fix(tmp_path, edit, start, fix):
    data = copy.deepcopy(_micro())
    edit(data)
    msg = _load_bad(tmp_path, data)
    assert msg.startswith(f"bad.yaml: {start}"), msg
    assert fix in msg, msg


def test_duplicate_yaml_key_is_an_error(tmp_path):
    text = (
        (shipped_spaces_dir() / "micro.yaml")
        .read_text()
        .replace("img_size: 32", "img_size: 32\nimg_size: 64")
    )
    msg = _load_bad(tmp_path, text)
    assert msg.startswith("bad.yaml: line ") and "'img_size' appears twice" in msg


def test_invalid_yaml_and_missing_files(tmp_path):
    msg = _load_bad(tmp_path, "stages: [1, 2\n")
    assert msg.startswith("bad.yaml: line ") and "not valid YAML" in msg
    assert _load_bad(tmp_path, "").startswith("bad.yaml: the file is empty")
    with pytest.raises(SpaceError, match=r"no such file .*did you mean 'micro'"):
        load_space("micor")


def test_numbers_written_the_pyyaml_way(tmp_path):
    data = _micro()
    data["constraints"] = {"max_macs": "2e9", "max_params": 1.5e6, "max_latency_ms": "12.5"}
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data))
    cons = load_space(path).constraints
    assert (cons.max_macs, cons.max_params, cons.max_latency_ms) == (2_000_000_000, 1_500_000, 12.5)
    assert isinstance(cons.max_macs, int)
