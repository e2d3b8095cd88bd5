from nnunet_medaka.cli import entry_point

entry_point()
