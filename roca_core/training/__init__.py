"""Offline training of ROCA: config, schedule, class weights, checkpoints, logs, DDP, loop.

Kept import-light: the heavy pieces (model, dataset) are imported when a run starts.
"""
from roca_core.training.class_weights import class_weights_from_counts
from roca_core.training.config import (DataConfig, ExperimentConfig, TrainConfig,
                                       experiment_config_from_dict, load_experiment_config)
from roca_core.training.schedule import WarmupMultiStepFactor, build_lr_scheduler
from roca_core.training.train_state import (TrainStateError, load_train_state,
                                            save_train_state)
from roca_core.training.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "ExperimentConfig", "TrainConfig", "experiment_config_from_dict",
           "load_experiment_config", "WarmupMultiStepFactor", "build_lr_scheduler",
           "class_weights_from_counts", "TrainStateError", "load_train_state", "save_train_state",
           "Trainer", "TrainResult"]
