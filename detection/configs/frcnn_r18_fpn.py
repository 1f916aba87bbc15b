# kdzoo's mmdet teacher config for the fmnist-scenes data: the student's Faster R-CNN (frcnn_r18_c16_fpn.py) at the
# full ResNet-18 width (64 base channels) with a wider box head, on the same anchors and FPN strides, so that
# Chen et al. 2017's RPN and RoI-head terms compare the two on the same anchors and proposals.
# Use it as `mmdet:kdzoo::frcnn_r18_fpn.py`.
_base_ = './frcnn_r18_c16_fpn.py'
model = dict(
    backbone=dict(base_channels=64),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=128), bbox_head=dict(in_channels=128, fc_out_channels=256)))
