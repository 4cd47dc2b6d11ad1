"""The reconcile loop skeleton: desired → diff → apply per area, failures isolated, status reported."""

from cairn.agent.reconcile import ReconcileLoop
from cairn.errors import CommandFailed


class FileArea:
    """A toy area: desired lines come from the store, 'actual' is a list we own."""
    name = "files"

    def __init__(self):
        self.applied = []
        self.current = {"a"}

    def desired(self, store):
        return set(store.get("desired/files", []))

    def actual(self):
        return set(self.current)

    def diff(self, desired, actual):
        return sorted([("add", x) for x in desired - actual] + [("remove", x) for x in actual - desired])

    def apply(self, actions):
        self.applied.append(actions)
        for verb, item in actions:
            (self.current.add if verb == "add" else self.current.discard)(item)


class BrokenArea:
    name = "broken"

    def desired(self, store):
        return 1

    def actual(self):
        raise CommandFailed(["mdadm", "--detail"], 1, "mdadm: no arrays")

    def diff(self, desired, actual):
        return []

    def apply(self, actions):
        raise AssertionError("never called")


def test_loop_applies_only_the_difference_and_reports_per_area(store):
    area = FileArea()
    store.put("desired/files", ["a", "b"])
    loop = ReconcileLoop(store, "n1", [BrokenArea(), area], clock=lambda: 5.0)
    report = loop.run_once()
    assert area.applied == [[("add", "b")]]
    assert report["files"].ok and report["files"].actions == 1
    assert (report["broken"].ok, report["broken"].error) == (False, "mdadm exited with 1: mdadm: no arrays")
    assert store.get("status/n1/reconcile")["files"] == {"ok": True, "error": None, "since": 5.0}
    written = store.get_entry("status/n1/reconcile").mod_revision
    loop.clock = lambda: 6.0
    loop.run_once()
    assert area.applied == [[("add", "b")]], "a converged area must not be applied again"
    assert store.get_entry("status/n1/reconcile").mod_revision == written, \
        "an unchanged report must not be written again"
