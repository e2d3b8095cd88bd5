"""Stage 4, pseudolabel: a teacher, unlabeled scans and a quality model in, a student dataset out.

Runs the teacher on unlabeled images, keeps the pseudo-labels the quality classifier accepts and assembles an
nnU-Net dataset that shares the teacher's preprocessing, with pseudo-labeled cases in training folds only.
Imports the shared top-level modules and the stages before it.
"""

__all__: list = []
