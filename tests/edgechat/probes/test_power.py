"""Power readers against fixtures shaped like the real sources (sysfs trees, NVML's API, vcgencmd and
powermetrics output), the energy meter's integration, and the labelled estimate when no reader works."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgechat.probes.energy import EnergyMeter, meter_for
from edgechat.core.errors import EdgechatError
from edgechat.probes.power import (READERS, NvmlReader, PowermetricsReader, PowerSupplyReader, RaplReader, ReaderUnavailable,
                            RpiPmicReader, detect, integrate, parse_powermetrics)

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "power"
# sum over the PMIC rails of current x voltage, worked out by hand from the two fixture files
PMIC_IDLE_W = 1.6233774290510201
PMIC_LOAD_W = 4.57660874705102


class Clock:
    """A fake clock: each call advances one second, so sampled energy does not depend on timing."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 1.0
        return self.t


def test_registry_names_every_reader():
    assert set(READERS) == {"rapl", "nvml", "power_supply", "rpi_pmic", "powermetrics"}


# -- counters -----------------------------------------------------------------------------------------
@pytest.fixture
def powercap(tmp_path) -> Path:
    root = tmp_path / "powercap"
    shutil.copytree(FIX / "powercap", root)
    return root


def bump(zone: Path, uj: int) -> None:
    (zone / "energy_uj").write_text(f"{int((zone / 'energy_uj').read_text()) + uj}\n")


def test_rapl_sums_package_and_dram_zones_only(powercap):
    r = RaplReader(powercap)
    assert r.detail == "package-0+dram"  # core/uncore are inside the package; psys would double count
    assert r.energy_j() == 0.0
    bump(powercap / "intel-rapl:0", 5_000_000)
    bump(powercap / "intel-rapl:0:2", 1_250_000)
    bump(powercap / "intel-rapl:0:0", 4_000_000)
    bump(powercap / "intel-rapl:1", 9_000_000)
    assert r.energy_j() == pytest.approx(6.25)


def test_rapl_counter_wraparound(powercap):
    pkg = powercap / "intel-rapl:0"
    wrap = int((pkg / "max_energy_range_uj").read_text())
    (pkg / "energy_uj").write_text(f"{wrap - 1_000_000}\n")
    r = RaplReader(powercap)
    (pkg / "energy_uj").write_text("2000000\n")  # passed the top of the range and started again
    assert r.energy_j() == pytest.approx(3.000001)


def test_rapl_absent_says_why(tmp_path):
    with pytest.raises(ReaderUnavailable, match="absent"):
        RaplReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderUnavailable, match="no package or dram"):
        RaplReader(tmp_path / "empty")


class FakeNvml:
    """pynvml's calls, answering from the fixture: each energy read takes the next recorded value."""

    class NVMLError(Exception):
        pass

    def __init__(self, fixture: dict, supported: bool = True):
        self.devices = fixture["devices"]
        self.reads = [0] * len(self.devices)
        self.supported = supported

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.supported:
            raise self.NVMLError("Not Supported")
        values = self.devices[h]["total_energy_mj"]
        v = values[min(self.reads[h], len(values) - 1)]
        self.reads[h] += 1
        return v


def test_nvml_energy_counter_over_all_gpus():
    fixture = json.loads((FIX / "nvml.json").read_text())
    nvml = FakeNvml(fixture)
    r = NvmlReader(nvml)  # its probe read takes the first value of each device
    nvml.reads = [0, 0]
    start = r.energy_j()
    end = r.energy_j()
    assert end - start == pytest.approx((12500 + 500) / 1e3)
    assert r.detail == "2 GPUs"


def test_nvml_unsupported_gpu_says_why():
    fixture = json.loads((FIX / "nvml.json").read_text())
    with pytest.raises(ReaderUnavailable, match="Not Supported"):
        NvmlReader(FakeNvml(fixture, supported=False))


# -- samplers -----------------------------------------------------------------------------------------
def test_power_supply_laptop_current_times_voltage():
    r = PowerSupplyReader(FIX / "power_supply_laptop")
    assert r.battery.name == "BAT0"  # the Mains adapter is not a battery
    assert r.power_w() == pytest.approx(1.5 * 12.0)


def test_power_supply_android_negative_current():
    r = PowerSupplyReader(FIX / "power_supply_android")
    assert r.power_w() == pytest.approx(0.45 * 3.85)


def test_power_supply_prefers_power_now_and_refuses_charging(tmp_path):
    root = tmp_path / "ps"
    shutil.copytree(FIX / "power_supply_laptop", root)
    (root / "BAT0" / "power_now").write_text("9500000\n")
    assert PowerSupplyReader(root).power_w() == pytest.approx(9.5)
    (root / "BAT0" / "status").write_text("Charging\n")
    with pytest.raises(ReaderUnavailable, match="charging"):
        PowerSupplyReader(root)


def test_rpi_pmic_sums_rails_with_current_and_voltage():
    r = RpiPmicReader(run=lambda: (FIX / "vcgencmd_pmic_read_adc.txt").read_text())
    assert r.power_w() == pytest.approx(PMIC_IDLE_W)
    assert "EXT5V" not in r.rails() and "BATT" not in r.rails()  # voltage only: no current to pair
    assert len(r.rails()) == 12


def test_rpi_pmic_without_rails_is_unavailable():
    with pytest.raises(ReaderUnavailable):
        RpiPmicReader(run=lambda: "error=1 error_msg=\"Command not registered\"\n")


@pytest.mark.parametrize("name", ["powermetrics.txt", "powermetrics.plist"])
def test_powermetrics_text_and_plist(name):
    data = (FIX / name).read_bytes()
    assert parse_powermetrics(data) == pytest.approx(14.304)
    assert PowermetricsReader(run=lambda: data).power_w() == pytest.approx(14.304)


def test_powermetrics_text_without_combined_line_counts_each_unit_once():
    text = (FIX / "powermetrics.txt").read_text().replace("Combined Power (CPU + GPU + ANE): 14304 mW", "")
    assert parse_powermetrics(text.encode()) == pytest.approx(14.304)


def test_powermetrics_without_root():
    with pytest.raises(ReaderUnavailable, match="root"):
        PowermetricsReader(run=lambda: b"powermetrics must be invoked as the superuser\n")


def test_integrate_trapezoid():
    assert integrate([(0.0, 2.0), (1.0, 4.0), (3.0, 4.0)]) == pytest.approx(3.0 + 8.0)
    assert integrate([(5.0, 10.0)]) == 0.0


# -- the meter ----------------------------------------------------------------------------------------
def test_meter_with_a_counter_reader(powercap):
    meter = EnergyMeter(RaplReader(powercap), watts_per_core=4.0, profile_name="host")
    mark = meter.begin()
    bump(powercap / "intel-rapl:0", 7_500_000)
    r = meter.end(mark)
    assert r.energy_j == pytest.approx(7.5)
    assert r.source == "measured: rapl (package-0+dram)"


def test_meter_with_a_sampler_reader_integrates_its_samples():
    outputs = iter([(FIX / "vcgencmd_pmic_read_adc.txt").read_text()] * 2)  # the reader's own probe, then begin

    def run():
        return next(outputs, (FIX / "vcgencmd_pmic_read_adc_load.txt").read_text())

    meter = EnergyMeter(RpiPmicReader(run=run), watts_per_core=1.0, profile_name="rpi5-8gb", clock=Clock(),
                        interval=3600)
    r = meter.end(meter.begin())
    assert r.samples == 2 and r.span_s == 1.0  # one sample at begin (idle), one at end (load)
    assert r.energy_j == pytest.approx((PMIC_IDLE_W + PMIC_LOAD_W) / 2)
    assert r.source == "measured: rpi_pmic (12 PMIC rails)"


def test_meter_estimate_is_labelled_as_one():
    meter = EnergyMeter(None, watts_per_core=2.5, profile_name="host", assumed=True)
    mark = meter.begin()
    sum(i * i for i in range(200_000))  # some CPU time
    r = meter.end(mark)
    assert r.cpu_s > 0
    assert r.energy_j == pytest.approx(r.cpu_s * 2.5)
    assert r.source.startswith("estimated: process CPU time x 2.50 W/core (host profile, assumed figures)")


def test_meter_falls_back_to_the_estimate_when_a_reader_fails(powercap):
    meter = EnergyMeter(RaplReader(powercap), watts_per_core=4.0, profile_name="host")
    mark = meter.begin()
    shutil.rmtree(powercap)
    r = meter.end(mark)
    assert r.source.startswith("estimated:") and "rapl failed" in r.source


def test_detect_with_no_reader_gives_every_reason(tmp_path):
    reader, reasons = detect(order=("rapl", "power_supply", "rpi_pmic", "powermetrics"),
                             rapl={"root": tmp_path / "none"}, power_supply={"root": tmp_path / "none"},
                             rpi_pmic={"run": lambda: ""}, powermetrics={"run": lambda: b""})
    assert reader is None
    assert set(reasons) == {"rapl", "power_supply", "rpi_pmic", "powermetrics"}


def test_detect_takes_the_first_that_works(tmp_path):
    reader, reasons = detect(order=("rapl", "power_supply"), rapl={"root": tmp_path / "none"},
                             power_supply={"root": FIX / "power_supply_android"})
    assert reader.name == "power_supply" and "rapl" in reasons


def test_meter_for_targets_and_forced_readers():
    m = meter_for("rpi5-8gb", "estimate")
    assert m.reader is None and "rpi5-8gb profile, its power figures" in m.source
    assert m.watts_per_core == pytest.approx((7.0 - 2.7) / 4)
    with pytest.raises(EdgechatError, match="unknown power reader"):
        meter_for("host", "joulemeter")
    with pytest.raises(EdgechatError, match="unknown target"):
        meter_for("no-such-device", "estimate")


# -- every reply carries the probes --------------------------------------------------------------------
@pytest.fixture(scope="module")
def stories_q8(stories_model, tmp_path_factory):
    from converters.gguf_quantize import quantize_gguf
    from converters.gguf_writer import write_gguf

    d = tmp_path_factory.mktemp("power")
    write_gguf(stories_model, d / "f32.gguf", "f32")
    return quantize_gguf(d / "f32.gguf", d / "q8_0.gguf", "q8_0")


def test_reply_stats_have_latency_and_labelled_energy(stories_q8):
    import edgechat

    chat = edgechat.load(stories_q8, max_tokens=24, power="estimate")
    s = chat.complete("Once upon a time").stats
    assert s.load_s > 0 and s.ttft_s > 0 and s.decode_tok_s > 0 and s.peak_rss_mb > 0
    assert s.cpu_s > 0 and s.energy_j == pytest.approx(s.cpu_s * chat.meter.watts_per_core)
    assert s.energy_source.startswith("estimated:")
    assert s.j_per_token == pytest.approx(s.energy_j / s.completion_tokens)


def test_reply_with_a_measuring_reader(stories_q8, powercap):
    import edgechat

    class Ticking(RaplReader):  # the package counter moves 0.2 J between each read
        def energy_j(self):
            bump(powercap / "intel-rapl:0", 200_000)
            return super().energy_j()

    chat = edgechat.load(stories_q8, max_tokens=8)
    chat.meter = EnergyMeter(Ticking(powercap), 4.0, "host")
    s = chat.complete("Once upon a time").stats
    assert s.energy_source == "measured: rapl (package-0+dram)"
    assert s.energy_j == pytest.approx(0.2)


def test_probes_off_leave_energy_unmeasured(stories_q8):
    import edgechat

    chat = edgechat.load(stories_q8, max_tokens=8, power="estimate")
    chat.probes = False
    s = chat.complete("Once upon a time").stats
    assert s.energy_j is None and s.energy_source == "not measured" and s.decode_tok_s == 0.0
    assert s.completion_tokens == 8
