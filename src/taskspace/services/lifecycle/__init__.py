"""Driving a workspace through its state machine, one idempotent step at a time.

Every step follows load → work → apply: a short session loads a snapshot, the work (engine,
git) runs with no session open, and the result is written in a short session guarded by the
row's ``version``. A write that finds another version raises StaleWrite and the worker drops
its result; the reconciler drives the workspace again from what the database now says.
"""
