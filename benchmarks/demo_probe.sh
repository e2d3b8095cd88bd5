#!/bin/bash
# One probe behind the demo's settings (cpu-demo preset), on SYNTHETIC phantoms made by demo_probe_data.py:
# trains SupervisedTrainer on FOLD of a 2-fold split (splits_final.json written by hand: 3 of 6 labeled cases),
# predicts the 4 test cases and prints per-organ Dice and the training wall time (appended to $OUT/trials.txt).
#   usage: benchmarks/demo_probe.sh TAG WORK PLANS CONFIGURATION FOLD THREADS [config_key=json_value ...]
#   e.g.   benchmarks/demo_probe.sh a_lr05 /tmp/w80 nnUNetPlans 2d 0 1 num_epochs=16 initial_lr=0.05
# Defaults: 8 epochs x 50 iterations, 5 validation iterations, no mirroring, no final validation, seed 0.
# Run inside the project's environment (.venv/bin on PATH).
set -e
OUT=${OUT:-bench_output/demo_probes}; mkdir -p $OUT
TAG=$1; W=$2; PLANS=$3; CFG=$4; FOLD=$5; TH=$6; shift 6
export nnUNet_raw=$W/nnUNet_raw nnUNet_preprocessed=$W/nnUNet_preprocessed nnUNet_results=$OUT/res_$TAG
eval "$(nnunet-medaka env)"
export nnUNet_n_proc_DA=0 nnUNet_compile=f OMP_NUM_THREADS=$TH nnUNet_def_n_proc=1
P=$nnUNet_preprocessed/Dataset802_MedakaPhantomFewLabels
cp $P/nnunet_medaka.json $OUT/cfg_$TAG.json 2>/dev/null || echo '{}' > $OUT/cfg_$TAG.json
python - "$@" <<PY
import json,sys
c=json.load(open('$OUT/cfg_$TAG.json'))
c.update(dict(num_epochs=8,iterations_per_epoch=50,val_iterations_per_epoch=5,mirroring=False,final_validation=False,seed=0,cpu_threads=$TH))
for kv in sys.argv[1:]:
    k,v=kv.split('=',1); c[k]=json.loads(v)
json.dump(c,open('$OUT/cfg_$TAG.json','w'))
PY
export nnunet_medaka_config=$OUT/cfg_$TAG.json
S=$(date +%s)
nnUNetv2_train 802 $CFG $FOLD -tr SupervisedTrainer -p $PLANS -device cpu > $OUT/$TAG.train.log 2>&1
T=$(date +%s)
R=$W/nnUNet_raw/Dataset802_MedakaPhantomFewLabels
M=$nnUNet_results/Dataset802_MedakaPhantomFewLabels/SupervisedTrainer__${PLANS}__$CFG
nnUNetv2_predict -i $R/imagesTs -o $OUT/pred_$TAG -d 802 -c $CFG -tr SupervisedTrainer -p $PLANS -f $FOLD -device cpu -npp 0 -nps 0 --disable_tta > $OUT/$TAG.pred.log 2>&1
nnUNetv2_evaluate_folder $R/labelsTs $OUT/pred_$TAG -djfile $M/dataset.json -pfile $M/plans.json > /dev/null 2>&1
python -c "
import json; s=json.load(open('$OUT/pred_$TAG/summary.json'))
d=[round(s['mean'][str(k)]['Dice'],3) for k in range(1,10)]
print('$TAG', 'train_s', $T-$S, 'dice', d, 'mean %.3f'%s['foreground_mean']['Dice'])
" | tee -a $OUT/trials.txt
