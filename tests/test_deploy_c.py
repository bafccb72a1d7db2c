"""The C99 export compiles with strict flags and gives the integer engine's spike counts bit for bit."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from mininsnn import pretrained
from mininsnn.data import load_mnist
from mininsnn.deploy import conversion as cv
from mininsnn.deploy import engine as npe
from mininsnn.deploy.cexport import CExportError, c_sizes, export_c
from tests.test_deploy import SHAPE, small_model

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on PATH")

MAIN = r"""
#include <stdio.h>
#include "NAME.h"
int main(void)
{
    static NAME_state st;
    static uint8_t x[STEPS * P_IN_C * P_IN_H * P_IN_W];
    uint16_t counts[P_CLASSES];
    int k;
    printf("%lu\n", (unsigned long)sizeof(st));
    while (fread(x, 1, (P_STATIC_INPUT ? 1 : STEPS) * P_IN_C * P_IN_H * P_IN_W, stdin) ==
           (size_t)((P_STATIC_INPUT ? 1 : STEPS) * P_IN_C * P_IN_H * P_IN_W)) {
        int cls = NAME_predict(x, STEPS, &st, counts);
        printf("%d", cls);
        for (k = 0; k < P_CLASSES; ++k) {
            printf(" %u", (unsigned)counts[k]);
        }
        printf("\n");
    }
    return 0;
}
"""


def run_c(model, x, T, tmp_path, name):
    """Export, compile with a test main, feed the samples; returns (sizeof state, counts, classes)."""
    paths, const, state = export_c(model, tmp_path, name)
    main = MAIN.replace("NAME", name).replace("P_", name.upper() + "_").replace("STEPS", str(T))
    (tmp_path / "main.c").write_text(main)
    exe = tmp_path / "a.out"
    subprocess.run([CC, *FLAGS, "-o", str(exe), str(tmp_path / "main.c"), paths[1]], check=True,
                   capture_output=True)
    data = x.tobytes() if model.static else np.ascontiguousarray(np.moveaxis(x, 1, 0)).tobytes()
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout.decode()
    lines = out.split("\n")
    rows = [list(map(int, line.split())) for line in lines[1:] if line]
    return int(lines[0]), np.array([r[1:] for r in rows]), np.array([r[0] for r in rows]), state


@needs_cc
def test_exported_mnist_model_matches_the_engine_bit_for_bit(tmp_path):
    model = pretrained.load_integer("mnist-4bit")
    x = load_mnist("test").images[:24][:, None]
    size, counts, cls, state = run_c(model, x, 100, tmp_path, "mnist4")
    ref = npe.predict(model, x, 100)
    assert np.array_equal(counts, ref)
    assert np.array_equal(cls, ref.argmax(axis=1))
    assert size == state == c_sizes(model)[1]          # the RAM the export reports
    src = (tmp_path / "mnist4.c").read_text() + (tmp_path / "mnist4.h").read_text()
    code = re.sub(r"/\*.*?\*/", "", src, flags=re.S)               # without the comments
    assert "malloc" not in code and "double" not in code
    assert "float" not in code.replace("floor_shift", "")
    assert re.findall(r"#include <(\w+\.h)>", code) == ["string.h", "stdint.h"]


@needs_cc
@pytest.mark.parametrize("reset,leak,F,static", [("zero", "shift", [-2, 3, 5], False),
                                                 ("subtract", "multiply", [0, -1, 2], True),
                                                 ("zero", "multiply", "max", True)])
def test_exported_small_models_match_the_engine(tmp_path, reset, leak, F, static):
    """Both resets and leaks, F < 0, negative and zero gains, frames instead of a static image."""
    net = small_model(7, 4, 0.9, 1.0, reset)
    model = cv.convert(net.state_dict(), net.config, leak=leak, frac_bits=F, input_shape=SHAPE,
                       static=static)
    T = 15
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (9,) + SHAPE if static else (T, 9) + SHAPE).astype(np.uint8)
    _, counts, _, _ = run_c(model, x, T, tmp_path, "small")
    assert np.array_equal(counts, npe.predict(model, x, T))
    assert counts.sum() > 0


def test_export_refuses_bad_names_and_missing_folders(tmp_path):
    model = pretrained.load_integer("mnist-4bit")
    with pytest.raises(CExportError, match="C identifier"):
        export_c(model, tmp_path, "9lives")
    with pytest.raises(CExportError, match="does not exist"):
        export_c(model, tmp_path / "nope", "m")
    assert list(tmp_path.iterdir()) == []
