"""The facts the experiments need of each sampler are attributes of its class, and the tables derive
from the registry (labels, aliases, defining options, the paper's Table 2 order)."""

from __future__ import annotations

import pytest

from reinforcens.errors import ConfigError
from reinforcens.experiments.compare import PAPER_METHODS, canonical_method
from reinforcens.experiments.runner import ITEMPOP, Method, display_name, method_values
from reinforcens.samplers import (
    ALIASES,
    PAPER_SAMPLERS,
    SAMPLERS,
    canonical_name,
    method_label,
)

NAMES = sorted(SAMPLERS)


def test_registry_keys_are_the_class_names():
    assert all(cls.name == name for name, cls in SAMPLERS.items())


@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_has_a_label(name):
    label = SAMPLERS[name].label
    assert isinstance(label, str) and label.strip()
    assert method_label(name).strip()
    assert "{" not in method_label(name)


def test_train_help_lists_every_sampler_on_one_line_of_its_own(capsys):
    """``reinforcens train --help`` names each sampler with its one-line summary, none inherited."""
    from reinforcens.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    rows = text.split("samplers (--sampler):\n", 1)[1].splitlines()
    listed = {line.split()[0]: " ".join(line.split()[1:]) for line in rows if line.strip()}
    assert set(listed) == set(SAMPLERS)
    summaries = [SAMPLERS[n].summary for n in NAMES]
    assert all(s.strip() and "\n" not in s for s in summaries)
    assert len(set(summaries)) == len(summaries), "a subclass inherits its parent's summary"
    assert all(listed[n] == " ".join(SAMPLERS[n].summary.split()) for n in NAMES)


def test_labels_are_distinct_so_no_subclass_inherits_its_parents():
    labels = [SAMPLERS[n].label for n in NAMES]
    assert len(set(labels)) == len(labels), labels


def test_labels_of_the_paper():
    expected = {
        "uniform": "BPR-GMF",
        "popularity": "BPR-Pop",
        "dns": "BPR-DNS",
        "kbgan": "KBGAN",
        "irgan": "IRGAN",
        "exposure": "BPR-EN",
        "ebpr": "EBPR",
        "rns": "RNS",
        "rns-es": "RNS-ES",
        "rns-fast": "RNS-fast",
        "dns-mn": "DNS(M,N)",
        "softmax": "Softmax(rho,N)",
        "srns": "SRNS",
        "ahns": "AHNS",
        "mixgcf": "MixGCF",
        "recns": "RecNS",
    }
    assert {n: method_label(n) for n in SAMPLERS} == expected
    assert {n: display_name(n) for n in SAMPLERS} == expected
    assert display_name(ITEMPOP) == "ItemPop"
    assert display_name("nope") == "nope"
    assert Method("uniform", "uniform").display == "BPR-GMF"
    assert Method("x", "rns", label="mine").display == "mine"


def test_the_uniform_label_names_the_recommender():
    from reinforcens.models import MODELS

    assert SAMPLERS["uniform"].label == "BPR-{model}"
    for kind, cls in MODELS.items():
        assert method_label("uniform", kind) == f"BPR-{cls.label}"
        assert method_label("bpr", kind) == f"BPR-{cls.label}"  # an alias works too
    assert method_label("rns", "no-such-model") == "RNS"  # no {model}: the model is not looked up
    with pytest.raises(ConfigError, match="no-such-model"):
        method_label("uniform", "no-such-model")


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_resolve_to_their_sampler(alias):
    owner = ALIASES[alias]
    assert alias in SAMPLERS[owner].aliases
    assert canonical_name(alias) == owner
    assert canonical_name(f"  {alias.upper()} ") == owner
    assert canonical_method(alias) == owner


def test_aliases_are_unique_and_never_a_sampler_name():
    every = [a for cls in SAMPLERS.values() for a in cls.aliases]
    assert len(every) == len(set(every)), every
    assert not set(every) & set(SAMPLERS)
    assert ITEMPOP not in every
    assert all(a == a.strip().lower() and a for a in every)
    assert set(ALIASES) == set(every)


def test_the_aliases_of_today():
    assert ALIASES == {
        "bpr": "uniform",
        "bpr-gmf": "uniform",
        "bpr-dns": "dns",
        "bpr-en": "exposure",
        "rns-as": "kbgan",
    }


@pytest.mark.parametrize("name", NAMES)
def test_defining_options_are_fields_of_the_config(name):
    cls = SAMPLERS[name]
    assert isinstance(cls.defining_options, tuple)
    assert len(set(cls.defining_options)) == len(cls.defining_options)
    for opt in cls.defining_options:
        assert opt in cls.Config.model_fields, (name, opt)


def test_defining_options_of_today():
    defining = {n: c.defining_options for n, c in SAMPLERS.items() if c.defining_options}
    assert defining == {
        "kbgan": ("alpha", "beta", "exposed_candidates", "hardness"),
        "irgan": ("alpha", "beta", "exposed_candidates", "hardness"),
        "rns-es": ("hardness",),
        "rns-fast": ("mmd",),
        "softmax": ("rho",),
        "srns": ("alpha", "temperature"),
        "ahns": ("alpha", "beta", "p"),
    }


def test_options_for_all_methods_leave_the_defining_ones_alone():
    base = {"lr": 0.01, "sampler_options": {"alpha": 2.0, "beta": 0.3, "hardness": False}}
    kbgan = method_values(Method("kbgan", "kbgan"), base)["sampler_options"]
    assert kbgan == {}
    es = method_values(Method("rns-es", "rns-es"), base)["sampler_options"]
    assert es == {"alpha": 2.0, "beta": 0.3}
    rns = method_values(Method("rns", "rns"), base)["sampler_options"]
    assert rns == {"alpha": 2.0, "beta": 0.3, "hardness": False}
    # a method's own options still set them
    own = method_values(Method("kbgan", "kbgan", options={"alpha": 1.0}), base)["sampler_options"]
    assert own == {"alpha": 1.0}


def test_paper_methods_in_the_papers_order():
    assert PAPER_METHODS == ("itempop", "uniform", "dns", "kbgan", "irgan", "exposure", "ebpr", "rns")
    assert PAPER_SAMPLERS == PAPER_METHODS[1:]
    orders = [c.paper_order for c in SAMPLERS.values() if c.paper_order is not None]
    assert len(orders) == len(set(orders)), "two samplers share a place in the paper's table"
    assert SAMPLERS["rns-es"].paper_order is None and SAMPLERS["popularity"].paper_order is None
