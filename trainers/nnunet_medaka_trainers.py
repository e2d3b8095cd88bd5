# nnU-Net imports every module in this folder by file name (see nnunet_medaka.ext_trainer_dir) and
# purges it again afterwards, so the classes live in the package and are only re-exported here.
from nnunet_medaka.training.supervised_trainer import SupervisedTrainer  # noqa: F401
from nnunet_medaka.training.kd_trainer import KDTrainer  # noqa: F401
