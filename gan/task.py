"""The gan task's registration (the ``kdzoo.tasks`` entry point ``gan``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="gan",
    metrics=(MetricInfo("fd_mnv2", higher_is_better=False, low=0.0, high=None, unit="", percent=False,
                        description="Fréchet distance to the teacher's images on ImageNet MobileNetV2 features "
                                    "(features[:14], 96-d per position; not FID)"),
             MetricInfo("psnr", low=0.0, high=None, unit="dB", percent=False,
                        description="PSNR of the student's images against the teacher's"),
             MetricInfo("ssim", low=-1.0, high=1.0, unit="", percent=False,
                        description="SSIM of the student's images against the teacher's")),
    pipeline_tag="image-to-image",
    adapter="zoo.gan.adapter:ADAPTER",
    recipes="zoo.gan.recipes",
    description="image-to-image generator compression (GAN Compression, Li et al. 2020; Chen et al. 2020; OMGD, Ren et al. 2021)",
)
