"""Stage 4, pseudolabel: a teacher, unlabeled scans and a quality model in, a student dataset out.

Runs the teacher on unlabeled images, keeps the pseudo-labels the quality classifier accepts and assembles an
nnU-Net dataset that shares the teacher's preprocessing, with pseudo-labeled cases in training folds only.
Imports the shared top-level modules and the stages before it.

Modules: ``inputs`` (teacher folder and unlabeled images, checked), ``signals`` (label-free signals of the fold
ensemble), ``acceptance`` (case/organ/none decisions, the ignore-label band, voxel gating), ``outputs`` (records,
``pseudolabels.csv``, summary, merging shards), ``predict`` (the pseudo-label run), ``commands`` (its CLI:
``nnunet-medaka pseudolabel``, ``pseudolabel-merge``), ``student`` (``nnunet-medaka build-student``). Heavy imports
(torch, nnU-Net) stay inside functions.
"""

__all__ = [
    "ACCEPTANCE_MODES",
    "apply_organ_rejection",
    "build_student",
    "decide",
    "merge_pseudolabels",
    "pseudolabel",
    "student_splits",
]


def __getattr__(name: str):
    # lazy: ``nnunet_medaka.pseudolabel.pseudolabel`` etc. without importing every module at package import
    if name in ("ACCEPTANCE_MODES", "apply_organ_rejection", "decide"):
        from nnunet_medaka.pseudolabel import acceptance

        return getattr(acceptance, name)
    if name == "merge_pseudolabels":
        from nnunet_medaka.pseudolabel.outputs import merge_pseudolabels

        return merge_pseudolabels
    if name == "pseudolabel":
        from nnunet_medaka.pseudolabel.predict import pseudolabel

        return pseudolabel
    if name in ("build_student", "student_splits"):
        from nnunet_medaka.pseudolabel import student

        return getattr(student, name)
    raise AttributeError(name)
