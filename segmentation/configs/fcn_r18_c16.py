# kdzoo's small mmseg student for the fmnist-scenes data (the OpenMMLab bridge): an FCN (Long et al. 2015)
# on a ResNetV1c-18 of 16 base channels, dilated to output stride 8, with an auxiliary FCN head on stage 3 (weight
# 0.4), mmseg's modules and defaults otherwise; 0.94M parameters (11 classes), about a third of the LR-ASPP
# MobileNetV2 teacher (2.6M).
# Use it as `mmseg:kdzoo::fcn_r18_c16.py`; the number of classes is set from the data.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN on the CPU (zoo.segmentation.mm)
data_preprocessor = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                         bgr_to_rgb=True, pad_val=0, seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='ResNetV1c', depth=18, base_channels=16, stem_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False, style='pytorch',
                  contract_dilation=True),
    decode_head=dict(type='FCNHead', in_channels=128, in_index=3, channels=64, num_convs=2, concat_input=True,
                     dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=64, in_index=2, channels=32, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg, align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
