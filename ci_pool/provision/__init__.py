"""Provisioning runner containers on Incus hosts over SSH.

templates.py    render provisioning/: Incus profile, cloud-init user-data, systemd unit
ssh.py          paramiko, pinned host keys (RejectPolicy), key auth only, timeouts
incus.py        the incus commands run on a host, kept as redacted evidence
plan.py         observe a host, decide create | adopt | reconcile | restart | remove
apply.py        carry out a saved plan (refused when the host changed since)
remove.py       retire a runner (drain, wait, delete, revoke) or rotate its token
credentials.py  the runner's credential file and token; waiting for its heartbeat
records.py      plans, the audit log and the runner inventory under <home>/provision
"""
