"""The reload bank: what a config built against the previous one's bank gets back, and when."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.upstream.bank import Kind, Owner, StateBank


@dataclass(eq=False)
class Thing:
    """A stand-in for a piece of state: records the policies it was given and its closing."""

    policy: str
    retuned: list[str] = field(default_factory=list)
    closed: int = 0

    def retune(self, policy: str) -> None:
        self.retuned.append(policy)
        self.policy = policy

    def close(self) -> None:
        self.closed += 1


KEPT: Kind[Thing] = Kind("kept", closes=True)
CARRIED: Kind[Thing] = Kind("carried")
OPEN: Kind[Thing] = Kind("open")  # has close() but its kind does not close
SVC = Owner("svc")
ROUTE = Owner("svc", "/v1")
ENDPOINTS = ("http://a:80",)


def carry(bank: StateBank, policy: str, key: object = ENDPOINTS) -> Thing:
    return bank.carry(CARRIED, SVC, key, policy, lambda: Thing(policy), lambda t: t.retune(policy))


def test_bank_keeps_an_object_whose_key_is_unchanged() -> None:
    """`keep` hands back the previous config's object under an equal key, a new one otherwise."""
    old = StateBank()
    first = old.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    same = StateBank(old).keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    changed = StateBank(old).keep(KEPT, SVC, (ENDPOINTS, "p2"), lambda: Thing("p2"))
    other_owner = StateBank(old).keep(KEPT, ROUTE, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    assert same is first
    assert changed is not first
    assert other_owner is not first


def test_bank_carries_an_object_into_a_changed_policy_only_at_commit() -> None:
    """`carry` hands back the previous object under a changed policy and retunes it once, at
    commit, not before."""
    old = StateBank()
    first = carry(old, "p1")
    new = StateBank(old)
    assert carry(new, "p2") is first
    assert (first.policy, first.retuned) == ("p1", [])
    new.commit()
    new.commit()
    assert (first.policy, first.retuned) == ("p2", ["p2"])


def test_bank_carries_an_unchanged_policy_without_retuning() -> None:
    """A carried object whose policy did not change is handed back and never retuned."""
    old = StateBank()
    first = carry(old, "p1")
    new = StateBank(old)
    assert carry(new, "p1") is first
    new.commit()
    assert first.retuned == []


def test_bank_builds_afresh_when_the_carry_key_changed() -> None:
    """`carry` builds a new object when the owner's key (its endpoints) changed, whatever the
    policy, and the old one is never retuned."""
    old = StateBank()
    first = carry(old, "p1")
    new = StateBank(old)
    fresh = carry(new, "p2", key=("http://b:80",))
    new.commit()
    assert fresh is not first
    assert first.retuned == []
    assert new.carried(CARRIED, SVC) is False


def test_bank_measures_a_policy_change_against_the_last_config() -> None:
    """The policy a carried object is compared with is the one the last config gave it."""
    first = carry(root := StateBank(), "p1")
    second = StateBank(root)
    carry(second, "p2")
    second.commit()
    second.sweep()
    third = StateBank(second)
    assert carry(third, "p2") is first
    third.commit()
    assert first.retuned == ["p2"]


def test_bank_abort_leaves_carried_state_under_its_old_policy() -> None:
    """A reload refused after compiling drops the queued policies, closes only what it built,
    and the previous bank still hands its objects to the next attempt."""
    old = StateBank()
    carried = carry(old, "p1")
    kept = old.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    refused = StateBank(old)
    carry(refused, "p2")
    built = refused.keep(KEPT, SVC, (ENDPOINTS, "p2"), lambda: Thing("p2"))
    assert refused.abort() == [built]
    refused.commit()
    assert carried.retuned == []
    retry = StateBank(old)
    assert carry(retry, "p3") is carried
    assert retry.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1")) is kept


def test_bank_sweep_returns_what_the_new_config_no_longer_holds() -> None:
    """`sweep` returns, each once, the previous objects of closing kinds that the new bank
    does not hold; kept ones and objects of other kinds are left alone."""
    old = StateBank()
    kept = old.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    dropped = old.keep(KEPT, ROUTE, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    old.put(KEPT, Owner("svc", "/v2"), None, dropped)
    old.keep(OPEN, SVC, None, lambda: Thing("p1"))
    new = StateBank(old)
    assert new.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1")) is kept
    new.commit()
    assert new.sweep() == [dropped]
    assert new.sweep() == []


def test_bank_lets_the_previous_bank_go_at_sweep() -> None:
    """After `sweep` the previous bank is no longer consulted: state asked for later (an
    implicit upstream made on demand) is built afresh."""
    old = StateBank()
    first = carry(old, "p1")
    new = StateBank(old)
    new.commit()
    new.sweep()
    assert carry(new, "p1") is not first
    assert new.previous(CARRIED, SVC) is None


def test_bank_finds_an_object_put_under_a_second_owner() -> None:
    """An object recorded under a route (a budget it shares with its upstream) is found by the
    next config under that route too."""
    old = StateBank()
    shared = old.keep(KEPT, SVC, (ENDPOINTS, "p1"), lambda: Thing("p1"))
    old.put(KEPT, ROUTE, (ENDPOINTS, "p1"), shared)
    new = StateBank(old)
    assert new.keep(KEPT, ROUTE, (ENDPOINTS, "p1"), lambda: Thing("p1")) is shared
    assert new.carried(KEPT, ROUTE)


def test_bank_previous_reads_the_last_object_whatever_its_key() -> None:
    """`previous` returns what the last config held under a kind and owner, key unseen."""
    old = StateBank()
    first = old.keep(KEPT, SVC, "one key", lambda: Thing("p1"))
    new = StateBank(old)
    assert new.previous(KEPT, SVC) is first
    assert new.previous(KEPT, ROUTE) is None
    assert StateBank().previous(KEPT, SVC) is None


def test_bank_repr_shows_its_entries() -> None:
    """The repr counts entries, carried ones and queued changes."""
    old = StateBank()
    carry(old, "p1")
    new = StateBank(old)
    carry(new, "p2")
    assert repr(new) == "StateBank(entries=1, carried=1, pending=1, linked=True)"
