"""The built-in node pack. `ALL_NODES` is what the `run_graph.nodes` entry point publishes."""
from .core.alpha import JoinImageWithAlpha, PorterDuffImageComposite, SplitImageWithAlpha
from .core.animation import SaveAnimatedPNG, SaveAnimatedWEBP
from .core.attention_multiply import (CLIPAttentionMultiply, UNetCrossAttentionMultiply, UNetSelfAttentionMultiply,
                                     UNetTemporalAttentionMultiply)
from .core.canny import Canny
from .core.clip_vision import (CLIPVisionEncode, CLIPVisionLoader, StyleModelApply, StyleModelLoader,
                               unCLIPConditioning)
from .core.composite import ImageCompositeMasked, LatentCompositeMasked
from .core.conditioning import (ConditioningAverage, ConditioningCombine, ConditioningConcat,
                                ConditioningSetArea, ConditioningSetAreaPercentage, ConditioningSetAreaStrength,
                                ConditioningSetMask, ConditioningSetTimestepRange, ConditioningZeroOut)
from .core.controlnet import ControlNetApply, ControlNetApplyAdvanced, ControlNetLoader, DiffControlNetLoader
from .core.custom_sampling import (AddNoise, BasicGuider, BasicScheduler, CFGGuider, DisableNoise, DualCFGGuider,
                                   ExponentialScheduler,
                                   KarrasScheduler, KSamplerSelect, PerpNegGuider, RandomNoise, SamplerCustom,
                                   SamplerCustomAdvanced, SDTurboScheduler, SplitSigmas)
from .core.gligen import GLIGENLoader, GLIGENTextBoxApply
from .core.image import LoadImage, LoadImageOutput, PreviewImage, SaveImage, SaveImageWebsocket
from .core.image_batch import ImageFlip, ImageFromBatch, ImageRotate, RepeatImageBatch
from .core.image_filters import (ImageAddNoise, ImageBlend, ImageBlur, ImageMorphology, ImageQuantize,
                                 ImageSharpen)
from .core.image_layout import ImageStitch, ResizeAndPadImage
from .core.image_ops import (EmptyImage, GetImageSize, ImageBatch, ImageColorToMask, ImageCrop, ImageInvert,
                             ImagePadForOutpaint, ImageScale, ImageScaleBy, ImageScaleToMaxDimension,
                             ImageScaleToTotalPixels, ImageToMask, MaskToImage)
from .core.inpaint import InpaintModelConditioning, InstructPixToPixConditioning
from .core.ksampler import KSampler, KSamplerAdvanced
from .core.latent import (EmptyLatentImage, LatentComposite, LatentFromBatch, LatentUpscale, LatentUpscaleBy,
                          RepeatLatentBatch, SetLatentNoiseMask)
from .core.latent_files import LoadLatent, SaveLatent
from .core.latent_ops import (LatentAdd, LatentBatch, LatentBatchSeedBehavior, LatentBlend, LatentCrop, LatentFlip,
                              LatentInterpolate, LatentMultiply, LatentRotate, LatentSubtract)
from .core.mask import (CropMask, FeatherMask, GrowMask, InvertMask, LoadImageMask, MaskComposite, MaskPreview,
                        SolidMask, ThresholdMask)
from .core.color_spaces import ImageRGBToYUV, ImageYUVToRGB
from .core.preview_any import PreviewAny
from .core.model_merging import (CLIPMergeAdd, CLIPMergeSimple, CLIPMergeSubtract, ModelMergeAdd, ModelMergeBlocks,
                                 ModelMergeSD1, ModelMergeSD2, ModelMergeSDXL, ModelMergeSimple, ModelMergeSubtract)
from .core.model_patches import (CFGNorm, CFGZeroStar, DifferentialDiffusion, EpsilonScaling, FreeU, FreeU_V2,
                                 HypernetworkLoader, HyperTile, APG, TCFG, FreSca, Mahiro, TomePatchModel,
                                 ModelComputeDtype,
                                 ModelSamplingContinuousEDM, ModelSamplingContinuousV, ModelSamplingDiscrete,
                                 PatchModelAddDownscale, PerpNeg, PerturbedAttentionGuidance, RescaleCFG,
                                 SelfAttentionGuidance)
from .core.primitives import (PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString,
                              PrimitiveStringMultiline)
from .core.sampler_nodes import (SamplerDPMAdaptative, SamplerDPMPP_2M_SDE, SamplerDPMPP_2S_Ancestral,
                                 SamplerDPMPP_3M_SDE, SamplerDPMPP_SDE, SamplerER_SDE, SamplerEulerAncestral,
                                 SamplerEulerAncestralCFGPP, SamplerEulerCFGpp, SamplerLCMUpscale, SamplerLMS,
                                 SamplerSASolver)
from .core.schedulers import (AlignYourStepsScheduler, BetaSamplingScheduler, ExtendIntermediateSigmas, FlipSigmas,
                              LaplaceScheduler, PolyexponentialScheduler, SamplingPercentToSigma, SetFirstSigma,
                              SplitSigmasDenoise, VPScheduler)
from .core.strings import (CaseConverter, RegexExtract, RegexMatch, RegexReplace, StringCompare, StringConcatenate,
                           StringContains, StringLength, StringReplace, StringSubstring, StringTrim)
from .core.upscale_model import ImageUpscaleWithModel, UpscaleModelLoader
from .core.vae import VAEDecode, VAEEncode, VAEEncodeForInpaint, VAELoader
from .core.vae_tiled import VAEDecodeTiled, VAEEncodeTiled
from .kolors.chatglm_file import LoadChatGLM3
from .kolors.loaders import DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel
from .kolors.lora import KolorsLoraLoaderModelOnly, LoadKolorsLoRA
from .kolors.sampler import KolorsSampler
from .kolors.text_encode import KolorsTextEncode
from .sd.loaders import (CheckpointLoader, CheckpointLoaderSimple, CLIPSetLastLayer, LoraLoader,
                         LoraLoaderModelOnly)
from .sd.checkpoint_save import CheckpointSave, CLIPSave, ModelSave, VAESave
from .sd.diffusers_loader import DiffusersLoader
from .core.rebatch import RebatchImages, RebatchLatents
from .core.latent_operations import (LatentApplyOperation, LatentApplyOperationCFG, LatentOperationSharpen,
                                     LatentOperationTonemapReinhard)
from .sd.lora_extract import LoraSave
from .sd.part_loaders import CLIPLoader, DualCLIPLoader, UNETLoader
from .sd.text import CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner

ALL_NODES = [
    EmptyLatentImage, LoadImage, PreviewImage, SaveImage, VAEDecode, VAEEncode, VAELoader,
    PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString, PrimitiveStringMultiline,
    DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel, KolorsSampler, KolorsTextEncode, LoadKolorsLoRA,
    KolorsLoraLoaderModelOnly,
    CheckpointLoaderSimple, CheckpointLoader, CLIPSetLastLayer, CLIPTextEncode, CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner, KSampler, KSamplerAdvanced, ConditioningCombine, ConditioningConcat,
    ConditioningAverage, ConditioningZeroOut, ConditioningSetArea, ConditioningSetAreaPercentage,
    ConditioningSetMask, ConditioningSetTimestepRange,
    LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch, LatentComposite, SetLatentNoiseMask,
    VAEEncodeForInpaint, ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImagePadForOutpaint, ImageInvert,
    ImageBatch, ImageCrop, ImageToMask, MaskToImage, LoadImageMask, SolidMask, InvertMask, CropMask,
    ThresholdMask, MaskComposite, FeatherMask, GrowMask, LoraLoader, LoraLoaderModelOnly,
    KSamplerSelect, BasicScheduler, KarrasScheduler, ExponentialScheduler, SDTurboScheduler, SplitSigmas,
    RandomNoise, DisableNoise, CFGGuider, BasicGuider, SamplerCustom, SamplerCustomAdvanced,
    UNETLoader, CLIPLoader, DualCLIPLoader, UpscaleModelLoader, ImageUpscaleWithModel,
    ControlNetLoader, ControlNetApplyAdvanced, ControlNetApply, Canny, VAEDecodeTiled, VAEEncodeTiled,
    ModelSamplingDiscrete, RescaleCFG, PerturbedAttentionGuidance, ImageBlend, ImageBlur, ImageSharpen,
    ImageCompositeMasked,
    LatentCompositeMasked, EmptyImage, GetImageSize, InpaintModelConditioning, ConditioningSetAreaStrength,
    RepeatImageBatch, ImageFromBatch, ImageFlip, ImageRotate, LatentAdd, LatentSubtract, LatentMultiply,
    LatentInterpolate, LatentBatch, LatentBatchSeedBehavior, LatentFlip, LatentRotate, LatentCrop,
    DifferentialDiffusion, FreeU, FreeU_V2, CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning,
    GLIGENLoader, GLIGENTextBoxApply, PolyexponentialScheduler, VPScheduler, BetaSamplingScheduler,
    AlignYourStepsScheduler, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, LatentBlend, SamplerEulerAncestral,
    SamplerEulerAncestralCFGPP, SamplerLMS, SamplerDPMPP_2S_Ancestral, SamplerDPMPP_SDE, SamplerDPMPP_2M_SDE,
    SamplerDPMPP_3M_SDE, SaveLatent, LoadLatent, DiffControlNetLoader, PerpNegGuider,
    ImageColorToMask, ModelMergeSimple, CLIPMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd,
    CLIPMergeSubtract, CLIPMergeAdd, HypernetworkLoader, LoadChatGLM3, PatchModelAddDownscale,
    SelfAttentionGuidance, CheckpointSave, ModelSave, VAESave, LaplaceScheduler, ExtendIntermediateSigmas,
    SamplingPercentToSigma, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver, DualCFGGuider,
    InstructPixToPixConditioning, ModelSamplingContinuousEDM, ModelSamplingContinuousV, AddNoise,
    UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply, UNetTemporalAttentionMultiply,
    PorterDuffImageComposite, SplitImageWithAlpha, JoinImageWithAlpha, StringConcatenate, StringSubstring,
    StringLength, CaseConverter, StringTrim, StringReplace, StringContains, StringCompare, RegexMatch, RegexExtract,
    RegexReplace, StyleModelLoader, StyleModelApply, SaveImageWebsocket, SaveAnimatedWEBP, SaveAnimatedPNG,
    ImageStitch, ResizeAndPadImage, ImageAddNoise, EpsilonScaling, CFGZeroStar, CFGNorm, ImageMorphology,
    ImageQuantize, LoraSave, ModelMergeSD1, ModelMergeSD2, ModelMergeSDXL, PerpNeg,
    DiffusersLoader, CLIPSave, HyperTile, RebatchLatents, RebatchImages,
    APG, TCFG, FreSca, Mahiro, LatentApplyOperation, LatentApplyOperationCFG, LatentOperationTonemapReinhard,
    LatentOperationSharpen, TomePatchModel, SamplerEulerCFGpp, ImageScaleToMaxDimension, MaskPreview, ImageRGBToYUV,
    ImageYUVToRGB, LoadImageOutput, SamplerLCMUpscale, PreviewAny, ModelComputeDtype,
]
