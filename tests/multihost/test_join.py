"""How a process learns whether it is one of several (vmp_jax.multihost.join.Cluster): flags,
JAX's variables, or a scheduler JAX detects itself. No process is started here."""

import pytest

from vmp_jax.multihost.join import ENV, SCHEDULERS, TPU_WORKERS, Cluster, JoinError


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*ENV, *SCHEDULERS, *TPU_WORKERS):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_lone_process_joins_nothing(clean_env):
    assert not Cluster.from_env().multi_process
    clean_env.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2")  # a single-host TPU VM
    assert not Cluster.from_env().multi_process


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLURM_NTASKS", "2"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5"),
        ("TPU_PROCESS_ADDRESSES", "10.0.0.2:8476,10.0.0.3:8476"),
    ],
)
def test_a_scheduler_or_a_tpu_pod_is_joined_by_jax_detection(clean_env, name, value):
    clean_env.setenv(name, value)
    cluster = Cluster.from_env()
    assert cluster.multi_process and cluster.detected and cluster.coordinator is None


def test_jax_variables_win_and_must_be_complete(clean_env):
    clean_env.setenv("TPU_WORKER_HOSTNAMES", "a,b")
    clean_env.setenv("JAX_COORDINATOR_ADDRESS", "a:1234")
    with pytest.raises(JoinError, match="JAX_NUM_PROCESSES must be too"):
        Cluster.from_env()
    clean_env.setenv("JAX_NUM_PROCESSES", "2")
    clean_env.setenv("JAX_PROCESS_ID", "1")
    cluster = Cluster.from_env()
    assert (cluster.coordinator, cluster.num_processes, cluster.process_id) == ("a:1234", 2, 1)
