"""The frontier's rules on fixed figures: dominated points, the choice under each constraint, the closest miss."""
from pathlib import Path

from edgechat.app.frontier import choose, closest_miss, mark_dominated


def rows():
    r = [dict(name="f32", speed=10.0, mean_kld=0.0, mib=4.0), dict(name="q8_0", speed=20.0, mean_kld=0.002, mib=2.0),
         dict(name="slow-q4", speed=15.0, mean_kld=0.05, mib=1.0), dict(name="q4_0", speed=30.0, mean_kld=0.04, mib=1.2),
         dict(name="s90", speed=35.0, mean_kld=0.3, mib=0.9)]
    mark_dominated(r)
    return {x["name"]: x for x in r}


def test_dominated_points():
    r = rows()
    assert [n for n, x in r.items() if x["dominated"]] == ["slow-q4"]  # q4_0: faster and closer


def test_choice_under_each_constraint():
    r = list(rows().values())
    assert choose(r, "max_kld", 0.045)["name"] == "q4_0"  # the fastest within the bound
    assert choose(r, "max_mib", 1.25)["name"] == "q4_0"  # the closest to the source within the size
    assert choose(r, "min_decode_tok_s", 18)["name"] == "q8_0"
    assert [x["name"] for x in r if x["meets"]] == ["q8_0", "q4_0", "s90"]
    assert choose(r, "max_mib", 0.5) is None and not any(x["meets"] for x in r)


def test_closest_miss_says_by_how_much():
    r, out = list(rows().values()), Path("OUT")
    assert closest_miss(r, "max_mib", 0.5, "host", out) == (
        "no candidate meets --max-mib 0.5: the closest is s90 (a 0.900 MiB file, 0.400 MiB over); the frontier is in OUT")
    assert closest_miss(r, "min_decode_tok_s", 50, "rpi5-8gb", out) == (
        "no candidate meets --min-decode-tok-s 50: the closest is s90 (35.0 tok/s on rpi5-8gb, 15.0 tok/s short); "
        "the frontier is in OUT")
    assert closest_miss(r, "max_kld", 1e-6, "host", out) == (
        "no candidate meets --max-kld 1e-06: the closest is f32 (mean KLD 0, 0x the bound); the frontier is in OUT")
