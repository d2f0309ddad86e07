from pathlib import Path

from setuptools import find_packages, setup

requirements = [line.split("#")[0].strip() for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()]

EXPORT = ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"]

setup(
    name="ecgnet",
    version="0.1.0",
    description="Config-driven PyTorch framework for ECG classification",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ecgnet", "ecgnet.*"]),
    package_data={"ecgnet": ["data/resources/*"]},   # split lists and scoring tables shipped with adapters
    install_requires=[r for r in requirements if r],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", *EXPORT],   # -n auto: one worker per core
                    # tools/export.py --format onnx, and the parity check against onnxruntime
                    "export": EXPORT,
                    # tools/benchmark.py row 4 (ecgnet vs torch_ecg); never imported by the package itself
                    "bench": ["torch-ecg==0.0.33"]},
    entry_points={"console_scripts": [
        "ecgnet-train=ecgnet.cli:train_main",
        "ecgnet-evaluate=ecgnet.cli:evaluate_main",
        "ecgnet-compare=ecgnet.cli:compare_main",
        "ecgnet-predict=ecgnet.cli:predict_main",
        "ecgnet-export=ecgnet.cli:export_main",
        "ecgnet-explain=ecgnet.cli:explain_main",
    ]},
)
