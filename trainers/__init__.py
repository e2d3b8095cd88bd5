# Thin re-export modules for nnU-Net's trainer search (nnUNet_extTrainer); see nnunet_medaka.ext_trainer_dir.
