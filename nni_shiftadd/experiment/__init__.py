"""``nnictl`` experiments of the evolution search: registration, loopback-only launch, REST polling, and the
``nni-shiftadd demo`` main job."""
from .nnictl import ExperimentError, Rest, create, listening_addresses, loopback_env, register, stop, wait

__all__ = ["ExperimentError", "Rest", "create", "listening_addresses", "loopback_env", "register", "stop", "wait"]
