# Hydra imports this package on every start (plug-in discovery): one line a sweep for submitit's
# "Bypassing sacct error" warnings on clusters without accounting (sacct_quiet.py; imports only logging).
from .sacct_quiet import install as _install_sacct_quiet

_install_sacct_quiet()
