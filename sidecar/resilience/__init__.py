"""Resilience policies as plain synchronous objects: breaker, retry budget, backoff, token
bucket, bulkhead bookkeeping and fault injection.

Each object reads time only through an injected `Clock` and randomness only through an
injected `random.Random`; none does I/O or sleeps, and only the fault injector emits events
(each fault it injects, as it draws it). The request pipeline calls them per request and
turns what they return (a permit, a transition, a delay) into actions and events. `gate.BulkheadGate` is the one asyncio-aware piece: the waiting half of a bulkhead.
"""
