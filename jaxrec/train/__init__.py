"""Fine-tuning an ImageNet backbone with a shared representation layer and one head per task.

`shallow` tuning freezes the backbone (inference-mode BN, no backbone gradient at all); `deep` tuning trains
every weight with BN in train mode.
"""
