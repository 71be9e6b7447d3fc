"""The registered metrics, one file each; importing this package registers them."""

from fsar_metric.metrics.bimhm import BiMHM, bimhm_distance
from fsar_metric.metrics.otam import OTAM, otam_cumulative_distance, otam_distance
from fsar_metric.metrics.proto import ProtoNet
from fsar_metric.metrics.trx import TRX

__all__ = ["OTAM", "TRX", "BiMHM", "ProtoNet", "bimhm_distance", "otam_cumulative_distance", "otam_distance"]
