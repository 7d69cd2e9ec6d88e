"""The import rules of STYLE.md hold: the agent's modules in one layer order, no cycles among a
package's modules, drivers/buffer/config below the agent, protocol libraries only in their
drivers, the simulators using only the evidence contract (the contracts are in pyproject.toml,
``[tool.importlinter]``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
         "lint_imports_command()"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_evidence_contract_is_a_leaf_of_the_agent() -> None:
    """gxpgate.agent.evidence (what auditors' tools and the service re-implement) depends on nothing
    else of the agent, so it can be read, and vendored, on its own."""
    import grimp

    graph = grimp.build_graph("gxpgate")
    outside = {
        (importer, imported)
        for importer in graph.find_descendants("gxpgate.agent.evidence")
        | {"gxpgate.agent.evidence"}
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.startswith("gxpgate.agent.")
        and not imported.startswith("gxpgate.agent.evidence")
    }
    assert not outside
