"""A pools file is checked whole before anything is written (issue 11.3, 11.6): every
problem is reported, each with its line and column; an unknown key comes with a
"did you mean"; nothing is half-read."""

from __future__ import annotations

import pytest

from stickyip.poolfile import PoolFileInvalid, load_pool_file


def problems(text: str) -> list[str]:
    with pytest.raises(PoolFileInvalid) as caught:
        load_pool_file(text, source="pools.yaml")
    return [str(p) for p in caught.value.problems]


def test_every_unknown_key_is_reported_with_a_suggestion() -> None:
    text = """\
pools:
  - name: a
    cidr: 10.1.0.0/24
    blocksize: 28
    nodeselector: {zone: a}
  - name: b
    cidr: 10.2.0.0/24
    excludes: [10.2.0.1]
    colour: red
"""
    assert problems(text) == [
        "line 4, column 5: pool 'a': unknown key 'blocksize' (did you mean 'blockSize'?)",
        "line 5, column 5: pool 'a': unknown key 'nodeselector' (did you mean 'nodeSelector'?)",
        "line 8, column 5: pool 'b': unknown key 'excludes' (did you mean 'exclude'?)",
        "line 9, column 5: pool 'b': unknown key 'colour' (known keys: name, cidr, blockSize, "
        "nodeSelector, exclude)",
    ]


def test_the_message_names_the_file_and_says_nothing_was_applied() -> None:
    with pytest.raises(PoolFileInvalid) as one:
        load_pool_file("name: a\ncidr: 10.1.0.0/24\nblockSzie: 28\n", source="pools.yaml")
    assert str(one.value) == ("pools.yaml: line 3, column 1: pool 'a': unknown key "
                              "'blockSzie' (did you mean 'blockSize'?)")
    with pytest.raises(PoolFileInvalid) as two:
        load_pool_file("- {name: a, cidr: 10.1.0.0/24, x: 1}\n- {name: b, cidr: 10.2.0.0/24, "
                       "y: 2}\n", source="pools.yaml")
    assert str(two.value).splitlines()[0] == "pools.yaml has 2 problems (nothing was applied):"


@pytest.mark.parametrize(("text", "expected"), [
    ("pools: [{name: a]", "line 1, column 17: not valid YAML: expected ',' or '}', but got ']'"),
    ("pools:\n  - name: a\n   cidr: 10.0.0.0/8\n",
     "line 3, column 4: not valid YAML: expected <block end>, but found '<block mapping "
     "start>'"),
    ("pools:\n  - name: a\n    cidr: 10.1.0.0/33\n",
     "line 3, column 11: pool 'a': invalid CIDR '10.1.0.0/33'"),
    ("pools:\n  - name: a\n    cidr: 10.1.0.0/24\n    blockSize: big\n",
     "line 4, column 16: pool 'a': invalid blockSize: Input should be a valid integer"),
    ("pools:\n  - name: a\n    cidr: 10.1.0.0/24\n    exclude: [10.9.0.1]\n",
     "line 4, column 14: pool 'a': excluded '10.9.0.1' is outside pool range 10.1.0.0/24"),
    ("pools:\n  - name: a\n", "line 2, column 5: pool 'a': the key 'cidr' is required"),
    ("pools:\n  - name: a\n    cidr: 10.1.0.0/24\n    cidr: 10.2.0.0/24\n",
     "line 4, column 5: pool 'a': key 'cidr' is given twice"),
    ("pool:\n  - name: a\n", "line 1, column 1: pool: unknown key 'pool' (did you mean "
                             "'pools'?)"),
    ("pools: {name: a}\n", "line 1, column 8: 'pools' must be a list of pools, got a mapping"),
    ("just a string\n", "line 1, column 1: a pool must be a mapping (name, cidr, ...), got the "
                        "value 'just a string'"),
    ("", "line 1, column 1: the pools file holds no pool"),
    ("- {name: a, cidr: 10.1.0.0/16}\n- {name: a, cidr: 10.2.0.0/16}\n",
     "line 2, column 10: pool 'a' is defined twice in the file (first at line 1)"),
    ("- {name: a, cidr: 10.1.0.0/16}\n- {name: b, cidr: 10.1.128.0/17}\n",
     "line 1, column 19: pools 'a' (10.1.0.0/16) and 'b' (10.1.128.0/17) overlap in the file"),
])
def test_each_problem_has_its_place(text: str, expected: str) -> None:
    (found,) = problems(text)
    assert found.startswith(expected), found


def test_a_configmap_is_read_with_places_inside_its_data() -> None:
    text = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: pools}
data:
  pools.yaml: |
    pools:
      - name: a
        cidr: 10.1.0.0/24
        blockSiz: 28
"""
    assert problems(text) == ["ConfigMap data 'pools.yaml', line 4, column 5: pool 'a': "
                              "unknown key 'blockSiz' (did you mean 'blockSize'?)"]
    good = text.replace("blockSiz:", "blockSize:")
    assert [(p.name, p.block_size) for p in load_pool_file(good)] == [("a", 28)]


def test_every_form_of_file_is_read() -> None:
    one = "name: a\ncidr: 10.1.0.0/24\n"
    listed = "- {name: a, cidr: 10.1.0.0/24}\n- {name: b, cidr: 10.2.0.0/24}\n"
    docs = "name: a\ncidr: 10.1.0.0/24\n---\nname: b\ncidr: 10.2.0.0/24\n"
    wrapped = "pools:\n  - {name: a, cidr: 10.1.0.0/24, nodeSelector: {zone: a}}\n"
    assert [p.name for p in load_pool_file(one)] == ["a"]
    assert [p.name for p in load_pool_file(listed)] == ["a", "b"]
    assert [p.name for p in load_pool_file(docs)] == ["a", "b"]
    assert load_pool_file(wrapped)[0].node_selector == {"zone": "a"}
