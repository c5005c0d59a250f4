"""Distribution metadata for fedhft (pyproject-style metadata kept in one place: here)."""

from setuptools import find_packages, setup

TORCH = "torch==2.13.*"
EXTRAS = {
    # onnx 1.18+ writes optimizer models with IR 11 which ORT 1.19 rejects; 1.17.0 is accepted.
    "ort": ["onnxruntime-training-cpu==1.19.2", "onnx==1.17.0"],
    # ExecuTorch training APIs are experimental: pin exactly. It pins torchao itself.
    "executorch": ["executorch==1.5.1", TORCH],
    "mqtt": ["paho-mqtt>=2.0,<3"],
    "broker": ["amqtt==0.12.1", "cryptography>=42"],
    "sim": ["matplotlib>=3.7", "scikit-learn>=1.3", "rich>=13"],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})
EXTRAS["dev"] = EXTRAS["all"] + ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "ruff==0.17.6"]

setup(
    name="fedhft",
    version="0.1.0",
    description="Federated fine-tuning of pretrained language models on heterogeneous edge devices over MQTT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "fedhft*",
            "devices*",
            "bundle_runtime*",
            "export*",
            "edge_runtime*",
            "server*",
            "simulate*",
            "benchmarks*",
        ]
    ),
    # Applications run from a checkout (tests/, tools/, examples/, configs/) are not installed:
    # docs/CONTRACTS.md, "Packages and who may import whom", says why each package is.
    package_data={"devices": ["*.yaml"]},
    install_requires=[
        TORCH,
        "transformers==5.23.*",
        "numpy>=1.26",
        "safetensors>=0.4",
        "psutil>=5.9",
        "pyyaml>=6",
        "tqdm>=4.66",
        "scipy>=1.10",  # server clustering (linear_sum_assignment); scikit-learn is only in [sim]
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fedhft=fedhft.cli:main"]},
    classifiers=["Programming Language :: Python :: 3.11", "Operating System :: POSIX :: Linux"],
)
