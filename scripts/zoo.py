"""A small zoo of reference CNNs for CIFAR-10 (3x32x32 inputs in [0, 1], 10 classes).

Five PyTorch networks with the layers of real-world models, each with a no-argument constructor
(so that ``--torch-class zoo:ResNet18`` works with ``scripts/`` on sys.path or as the current
folder), and for each a Keras twin builder ``keras_twin(module)`` that builds the same network as a
channels-last Keras Functional model and copies the (trained) weights into it:

* ``VGGMaxPool``       -- 3x3 conv-BN-ReLU stages with 2x2 max pooling, flatten, two Linear layers;
* ``ResNet18``         -- torchvision's ResNet-18 layout at base width 16 (16/32/64/128 channels);
* ``MobileNetV2Small`` -- MobileNetV2 inverted residual blocks (ReLU6, depthwise convs);
* ``DenseNetSmall``    -- DenseNet-style blocks that concatenate all earlier maps of their block;
* ``ResNet20``         -- the CIFAR ResNet-20 of He et al. (3x3 stem, 3 stages x 3 BasicBlocks,
  16/32/64 channels, 1x1 conv-BN projection shortcuts), global average pooling.

Inputs are pixels / 255 (no mean/std normalisation). Every conv is followed by BatchNorm2d; the
networks are meant to be used in eval mode. The Keras twins reproduce PyTorch's symmetric padding
of strided convolutions, of the 7x7 stem and of the padded max pool with ``ZeroPadding2D(p)``
followed by a 'valid' layer (zero padding before the max pool is exact because it follows a
ReLU), use the same BatchNormalization epsilon and permute the first Linear weight of
``VGGMaxPool`` from PyTorch's (C, H, W) flatten order to Keras' (H, W, C) order.

Importing this module imports torch only; keras is imported inside the builder functions (with
``KERAS_BACKEND=torch`` unless a backend is already chosen).

The training script is ``scripts/train_zoo.py``; the trained weights live in ``models/zoo/``.
"""

import torch
from torch import nn

__all__ = [
    "VGGMaxPool",
    "ResNet18",
    "MobileNetV2Small",
    "DenseNetSmall",
    "ResNet20",
    "NETS",
    "keras_twin",
    "vgg_maxpool_keras",
    "resnet18_keras",
    "mobilenetv2_keras",
    "densenet_keras",
    "resnet20_keras",
    "count_params",
    "layer_summary",
]

NUM_CLASSES = 10
INPUT_SHAPE_CHW = (3, 32, 32)


def count_params(module):
    """Number of trainable parameters (BatchNorm running statistics not counted)."""
    return sum(p.numel() for p in module.parameters())


def layer_summary(module):
    """'12 Conv2d, 12 BatchNorm2d, ...': how many of each standard leaf module the network has."""
    counts = {}
    for m in module.modules():
        if next(m.children(), None) is None:  # leaf
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def _conv_bn(cin, cout, k, stride=1, padding=None, groups=1):
    if padding is None:
        padding = (k - 1) // 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False), nn.BatchNorm2d(cout)


# --------------------------------------------------------------------------------------------
# VGG with max pooling
# --------------------------------------------------------------------------------------------
class VGGMaxPool(nn.Module):
    """32-32-MP-64-64-MP-128-128-MP (3x3 conv-BN-ReLU, MaxPool2d(2, 2)), flatten (128x4x4),
    Linear(2048, 128)-ReLU-Dropout(0.3)-Linear(128, 10)."""

    DESCRIPTION = ("VGG-style: 3x3 conv-BN-ReLU 32-32-MaxPool-64-64-MaxPool-128-128-MaxPool "
                   "(MaxPool2d(2, 2)), flatten 128x4x4, Linear(2048, 128)-ReLU-Dropout(0.3)-Linear(128, 10)")
    STAGES = ((32, 32), (64, 64), (128, 128))
    HIDDEN = 128

    def __init__(self):
        super().__init__()
        layers = []
        cin = 3
        for stage in self.STAGES:
            for cout in stage:
                conv, bn = _conv_bn(cin, cout, 3)
                layers += [conv, bn, nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4 * 4, self.HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(self.HIDDEN, NUM_CLASSES),
        )

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------------
# ResNet-18 (torchvision layout, base width 16)
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        out = self.relu(out)
        return out


def resnet_init(module):
    """torchvision's ResNet initialisation: Kaiming-normal conv weights (fan out), BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class ResNet18(nn.Module):
    """torchvision's resnet18 module for module (same attribute names: conv1, bn1, relu, maxpool,
    layer1..layer4, avgpool, fc), with base width 16 instead of 64."""

    DESCRIPTION = ("torchvision ResNet-18 layout at base width 16: 7x7/2 conv (pad 3)-BN-ReLU, MaxPool2d(3, 2, pad 1), "
                   "4 stages x 2 BasicBlocks (16/32/64/128 channels, stride 2 + 1x1 conv-BN downsample at the "
                   "first block of stages 2-4), AdaptiveAvgPool2d(1), flatten, fc(128, 10)")
    WIDTHS = (16, 32, 64, 128)

    def __init__(self):
        super().__init__()
        self.inplanes = self.WIDTHS[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(self.WIDTHS[0], 2)
        self.layer2 = self._make_layer(self.WIDTHS[1], 2, stride=2)
        self.layer3 = self._make_layer(self.WIDTHS[2], 2, stride=2)
        self.layer4 = self._make_layer(self.WIDTHS[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.WIDTHS[3] * BasicBlock.expansion, NUM_CLASSES)
        resnet_init(self)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        for _ in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


# --------------------------------------------------------------------------------------------
# MobileNetV2 (small, CIFAR strides)
# --------------------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """torchvision's InvertedResidual: [1x1 expand conv-BN-ReLU6] (omitted when expand_ratio is 1),
    3x3 depthwise conv-BN-ReLU6, 1x1 project conv-BN; residual add when stride 1 and inp == oup."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        self.stride = stride
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            conv, bn = _conv_bn(inp, hidden, 1)
            layers += [conv, bn, nn.ReLU6(inplace=True)]
        dw, dw_bn = _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
        pw, pw_bn = _conv_bn(hidden, oup, 1)
        layers += [dw, dw_bn, nn.ReLU6(inplace=True), pw, pw_bn]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Small(nn.Module):
    """MobileNetV2 at CIFAR scale: 3x3 stem conv (stride 1, 32 ch), 8 inverted residual blocks
    (t, c, n, s) = (1, 16, 1, 2), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1)
    (maps 32 -> 16 -> 8 -> 4), 1x1 conv to 320 ch-BN-ReLU6, AdaptiveAvgPool2d(1), flatten,
    Linear(320, 10)."""

    DESCRIPTION = ("MobileNetV2-style: 3x3 conv 32-BN-ReLU6, 8 inverted residual blocks (t,c,n,s) = "
                   "(1,16,1,2) (6,24,2,1) (6,32,2,2) (6,64,2,2) (6,96,1,1) (maps 32->16->8->4) with depthwise "
                   "3x3 convs (stride 2 ones padded 1) and ReLU6, "
                   "residual add where stride 1 and channels match, 1x1 conv 320-BN-ReLU6, "
                   "AdaptiveAvgPool2d(1), flatten, Linear(320, 10)")
    STEM = 32
    SETTINGS = ((1, 16, 1, 2), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))
    LAST = 320

    def __init__(self):
        super().__init__()
        conv, bn = _conv_bn(3, self.STEM, 3)
        layers = [nn.Sequential(conv, bn, nn.ReLU6(inplace=True))]
        cin = self.STEM
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        conv, bn = _conv_bn(cin, self.LAST, 1)
        layers.append(nn.Sequential(conv, bn, nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.LAST, NUM_CLASSES)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------------
# DenseNet (small, post-activation)
# --------------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """conv3x3(cat of all earlier maps of the block) -> BN -> ReLU: ``growth`` new channels."""

    def __init__(self, cin, growth):
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(growth)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, features):
        return self.relu(self.bn(self.conv(torch.cat(features, 1))))


class DenseBlock(nn.Module):
    def __init__(self, cin, growth, n_layers):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n_layers))
        self.out_channels = cin + n_layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """1x1 conv-BN-ReLU, AvgPool2d(2)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.relu(self.bn(self.conv(x))))


class DenseNetSmall(nn.Module):
    """3x3 stem conv 24-BN-ReLU; 3 dense blocks of 4 layers (growth 12, each layer conv3x3-BN-ReLU
    on the concatenation of all earlier maps of its block), transitions 1x1 conv-BN-ReLU +
    AvgPool2d(2) halving the channels; AdaptiveAvgPool2d(1), flatten, Linear."""

    DESCRIPTION = ("DenseNet-style (post-activation): 3x3 conv 24-BN-ReLU, 3 dense blocks of 4 layers "
                   "(growth 12; each layer conv3x3-BN-ReLU on torch.cat of all earlier maps of its block), "
                   "transitions 1x1 conv-BN-ReLU + AvgPool2d(2) halving the channels "
                   "(32x32 -> 16x16 -> 8x8), AdaptiveAvgPool2d(1), flatten, Linear")
    STEM = 24
    GROWTH = 12
    LAYERS = (4, 4, 4)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, self.STEM, 3), nn.ReLU(inplace=True))
        blocks = []
        cin = self.STEM
        for i, n in enumerate(self.LAYERS):
            block = DenseBlock(cin, self.GROWTH, n)
            blocks.append(block)
            cin = block.out_channels
            if i < len(self.LAYERS) - 1:
                blocks.append(Transition(cin, cin // 2))
                cin = cin // 2
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        x = self.stem(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


# --------------------------------------------------------------------------------------------
# ResNet-20 (CIFAR layout of He et al., projection shortcuts)
# --------------------------------------------------------------------------------------------
class ResNet20(nn.Module):
    """The CIFAR-10 ResNet-20 of He et al. (2016): 3x3 conv 16-BN-ReLU stem (stride 1, no max pool),
    3 stages x 3 BasicBlocks (16/32/64 channels, maps 32 -> 16 -> 8), the first block of stages 2
    and 3 with stride 2 and a 1x1 conv (stride 2)-BN projection shortcut (option B),
    AdaptiveAvgPool2d(1), flatten, Linear(64, 10). Attribute names as in ``ResNet18`` (conv1, bn1,
    relu, layer1..layer3, avgpool, fc)."""

    DESCRIPTION = ("CIFAR ResNet-20 (He et al.): 3x3 conv 16 (stride 1, pad 1)-BN-ReLU, no max pool, "
                   "3 stages x 3 BasicBlocks (16/32/64 channels, maps 32->16->8; stride 2 + 1x1 conv (stride 2)-BN "
                   "projection shortcut at the first block of stages 2 and 3), AdaptiveAvgPool2d(1), flatten, "
                   "fc(64, 10)")
    WIDTHS = (16, 32, 64)
    BLOCKS = 3

    def __init__(self):
        super().__init__()
        self.inplanes = self.WIDTHS[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(self.WIDTHS[0], self.BLOCKS)
        self.layer2 = self._make_layer(self.WIDTHS[1], self.BLOCKS, stride=2)
        self.layer3 = self._make_layer(self.WIDTHS[2], self.BLOCKS, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.WIDTHS[2] * BasicBlock.expansion, NUM_CLASSES)
        resnet_init(self)

    _make_layer = ResNet18._make_layer

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


# --------------------------------------------------------------------------------------------
# Keras twins
# --------------------------------------------------------------------------------------------
def _keras():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _np(t):
    return t.detach().cpu().numpy()


class _Twin:
    """Builds Keras layers from torch modules and records the weights to copy once the model is built."""

    def __init__(self, keras):
        self.keras = keras
        self.L = keras.layers
        self.assign = []  # (keras layer, [numpy arrays])
        self.names = {}

    def name(self, base):
        n = self.names.get(base, 0)
        self.names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def conv(self, x, m: nn.Conv2d, name):
        """Conv2d (or depthwise Conv2d) -> [ZeroPadding2D(p)] + Conv2D/DepthwiseConv2D."""
        L = self.L
        kh, kw = m.kernel_size
        sh, sw = m.stride
        ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        assert m.dilation == (1, 1), "dilation is not supported"
        assert m.padding_mode == "zeros"
        if (sh, sw) == (1, 1) and (ph, pw) == ((kh - 1) // 2, (kw - 1) // 2) and kh % 2 == 1 and kw % 2 == 1 \
                and kh <= 3 and kw <= 3:
            # stride 1, odd kernel up to 3x3: 'same' pads symmetrically, exactly like torch; strided and
            # larger convs get an explicit ZeroPadding2D (Keras' 'same' pads asymmetrically when strided)
            padding = "same"
        else:
            if ph or pw:
                x = L.ZeroPadding2D((ph, pw), name=self.name(name + "_pad"))(x)
            padding = "valid"
        use_bias = m.bias is not None
        w = _np(m.weight)
        if m.groups == 1:
            layer = L.Conv2D(m.out_channels, (kh, kw), strides=(sh, sw), padding=padding, use_bias=use_bias,
                             name=self.name(name))
            weights = [w.transpose(2, 3, 1, 0)]  # (O, I, kh, kw) -> (kh, kw, I, O)
        elif m.groups == m.in_channels == m.out_channels:
            layer = L.DepthwiseConv2D((kh, kw), strides=(sh, sw), padding=padding, depth_multiplier=1,
                                      use_bias=use_bias, name=self.name(name))
            weights = [w.transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        else:
            raise ValueError(f"grouped conv with groups={m.groups} is not supported by the twin builder")
        if use_bias:
            weights.append(_np(m.bias))
        self.assign.append((layer, weights))
        return layer(x)

    def bn(self, x, m: nn.BatchNorm2d, name):
        assert m.affine and m.track_running_stats
        layer = self.L.BatchNormalization(axis=-1, epsilon=m.eps, momentum=1.0 - m.momentum if m.momentum else 0.99,
                                          name=self.name(name))
        self.assign.append((layer, [_np(m.weight), _np(m.bias), _np(m.running_mean), _np(m.running_var)]))
        return layer(x)

    def relu(self, x, name, max_value=None):
        return self.L.ReLU(max_value=max_value, name=self.name(name))(x)

    def dense(self, x, m: nn.Linear, name, kernel=None):
        layer = self.L.Dense(m.out_features, use_bias=m.bias is not None, name=self.name(name))
        weights = [_np(m.weight).T if kernel is None else kernel]
        if m.bias is not None:
            weights.append(_np(m.bias))
        self.assign.append((layer, weights))
        return layer(x)

    def maxpool(self, x, m: nn.MaxPool2d, name):
        """MaxPool2d -> [ZeroPadding2D(p)] + MaxPooling2D 'valid' (zero padding is exact after a ReLU)."""
        assert not m.ceil_mode and m.dilation in (1, (1, 1))
        p = m.padding
        if p:
            x = self.L.ZeroPadding2D(p, name=self.name(name + "_pad"))(x)
        return self.L.MaxPooling2D(m.kernel_size, strides=m.stride, padding="valid", name=self.name(name))(x)

    def avgpool(self, x, m: nn.AvgPool2d, name):
        assert not m.padding and not m.ceil_mode
        return self.L.AveragePooling2D(m.kernel_size, strides=m.stride, padding="valid", name=self.name(name))(x)

    def build(self, inputs, outputs, model_name):
        model = self.keras.Model(inputs, outputs, name=model_name)
        for layer, weights in self.assign:
            layer.set_weights(weights)
        return model


def _input(tw):
    return tw.keras.Input(shape=(INPUT_SHAPE_CHW[1], INPUT_SHAPE_CHW[2], INPUT_SHAPE_CHW[0]), name="input")


def vgg_maxpool_keras(module: VGGMaxPool):
    """Keras twin of a VGGMaxPool (its weights copied)."""
    tw = _Twin(_keras())
    L = tw.L
    inp = _input(tw)
    x = inp
    mods = list(module.features)
    i = 0
    stage, idx = 1, 1
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d):
            x = tw.conv(x, m, f"conv{stage}_{idx}")
            x = tw.bn(x, mods[i + 1], f"bn{stage}_{idx}")
            x = tw.relu(x, f"relu{stage}_{idx}")
            i += 3
            idx += 1
        elif isinstance(m, nn.MaxPool2d):
            x = tw.maxpool(x, m, f"pool{stage}")
            stage, idx = stage + 1, 1
            i += 1
        else:
            raise TypeError(f"unexpected {type(m).__name__} in VGGMaxPool.features")
    _, h, w, c = x.shape
    x = L.Flatten(name="flatten")(x)
    fc1, _, drop, fc2 = module.classifier
    # torch flattens (C, H, W), Keras (H, W, C): permute the input rows of the first kernel
    k = _np(fc1.weight).reshape(fc1.out_features, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, fc1.out_features)
    x = tw.dense(x, fc1, "fc1", kernel=k)
    x = tw.relu(x, "fc1_relu")
    x = L.Dropout(drop.p, name="dropout")(x)
    x = tw.dense(x, fc2, "fc2")
    return tw.build(inp, x, "vgg_maxpool")


def _basic_blocks_keras(tw, x, layers):
    """BasicBlocks of ``layers`` (torch Sequentials layer1, layer2, ...) as Keras layers with Add."""
    for s, layer in enumerate(layers, start=1):
        for b, block in enumerate(layer):
            p = f"layer{s}_{b}"
            identity = x
            out = tw.conv(x, block.conv1, p + "_conv1")
            out = tw.bn(out, block.bn1, p + "_bn1")
            out = tw.relu(out, p + "_relu1")
            out = tw.conv(out, block.conv2, p + "_conv2")
            out = tw.bn(out, block.bn2, p + "_bn2")
            if block.downsample is not None:
                identity = tw.conv(x, block.downsample[0], p + "_downsample_conv")
                identity = tw.bn(identity, block.downsample[1], p + "_downsample_bn")
            out = tw.L.Add(name=p + "_add")([out, identity])
            x = tw.relu(out, p + "_relu2")
    return x


def resnet18_keras(module: ResNet18):
    """Keras twin of a ResNet18 (its weights copied)."""
    tw = _Twin(_keras())
    L = tw.L
    inp = _input(tw)
    x = tw.conv(inp, module.conv1, "conv1")
    x = tw.bn(x, module.bn1, "bn1")
    x = tw.relu(x, "relu")
    x = tw.maxpool(x, module.maxpool, "maxpool")
    x = _basic_blocks_keras(tw, x, [module.layer1, module.layer2, module.layer3, module.layer4])
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    x = tw.dense(x, module.fc, "fc")
    return tw.build(inp, x, "resnet18")


def mobilenetv2_keras(module: MobileNetV2Small):
    """Keras twin of a MobileNetV2Small (its weights copied)."""
    tw = _Twin(_keras())
    L = tw.L
    inp = _input(tw)
    x = inp

    def seq(x, mods, prefix):
        """conv-BN-ReLU6 ... sequences of a torch Sequential."""
        k = 0
        for m in mods:
            if isinstance(m, nn.Conv2d):
                k += 1
                kind = "dw" if m.groups > 1 else ("conv" if m.kernel_size == (3, 3) else "pw")
                x = tw.conv(x, m, f"{prefix}_{kind}{k}")
            elif isinstance(m, nn.BatchNorm2d):
                x = tw.bn(x, m, f"{prefix}_bn{k}")
            elif isinstance(m, nn.ReLU6):
                x = tw.relu(x, f"{prefix}_relu6_{k}", max_value=6.0)
            else:
                raise TypeError(f"unexpected {type(m).__name__} in MobileNetV2Small")
        return x

    for i, f in enumerate(module.features):
        if isinstance(f, InvertedResidual):
            out = seq(x, f.conv, f"block{i}")
            x = L.Add(name=f"block{i}_add")([x, out]) if f.use_res_connect else out
        else:
            x = seq(x, f, "stem" if i == 0 else "last")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    x = tw.dense(x, module.classifier, "classifier")
    return tw.build(inp, x, "mobilenetv2")


def densenet_keras(module: DenseNetSmall):
    """Keras twin of a DenseNetSmall (its weights copied)."""
    tw = _Twin(_keras())
    L = tw.L
    inp = _input(tw)
    conv, bn, _ = module.stem
    x = tw.conv(inp, conv, "stem_conv")
    x = tw.bn(x, bn, "stem_bn")
    x = tw.relu(x, "stem_relu")
    nb = nt = 0
    for f in module.features:
        if isinstance(f, DenseBlock):
            nb += 1
            features = [x]
            for j, layer in enumerate(f.layers):
                p = f"block{nb}_layer{j + 1}"
                h = features[0] if len(features) == 1 else L.Concatenate(axis=-1, name=p + "_cat")(features)
                h = tw.conv(h, layer.conv, p + "_conv")
                h = tw.bn(h, layer.bn, p + "_bn")
                h = tw.relu(h, p + "_relu")
                features.append(h)
            x = L.Concatenate(axis=-1, name=f"block{nb}_cat")(features)
        elif isinstance(f, Transition):
            nt += 1
            p = f"transition{nt}"
            x = tw.conv(x, f.conv, p + "_conv")
            x = tw.bn(x, f.bn, p + "_bn")
            x = tw.relu(x, p + "_relu")
            x = tw.avgpool(x, f.pool, p + "_pool")
        else:
            raise TypeError(f"unexpected {type(f).__name__} in DenseNetSmall.features")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    x = tw.dense(x, module.fc, "fc")
    return tw.build(inp, x, "densenet")


def resnet20_keras(module: ResNet20):
    """Keras twin of a ResNet20 (its weights copied); stride-2 3x3 convs get ZeroPadding2D(1) +
    'valid' (PyTorch pads them symmetrically), the 1x1 stride-2 shortcut convs are 'valid' as they
    are in PyTorch (padding 0)."""
    tw = _Twin(_keras())
    L = tw.L
    inp = _input(tw)
    x = tw.conv(inp, module.conv1, "conv1")
    x = tw.bn(x, module.bn1, "bn1")
    x = tw.relu(x, "relu")
    x = _basic_blocks_keras(tw, x, [module.layer1, module.layer2, module.layer3])
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    x = tw.dense(x, module.fc, "fc")
    return tw.build(inp, x, "resnet20")


# name -> (class, keras builder)
NETS = {
    "vgg_maxpool": (VGGMaxPool, vgg_maxpool_keras),
    "resnet18": (ResNet18, resnet18_keras),
    "mobilenetv2": (MobileNetV2Small, mobilenetv2_keras),
    "densenet": (DenseNetSmall, densenet_keras),
    "resnet20": (ResNet20, resnet20_keras),
}


def keras_twin(module):
    """The Keras twin of any of the zoo networks (dispatch on its class)."""
    for cls, builder in NETS.values():
        if type(module) is cls:
            return builder(module)
    raise TypeError(f"no Keras twin for {type(module).__name__}")

for _cls, _builder in NETS.values():
    _cls.keras_twin = _builder  # module.keras_twin() works too
del _cls, _builder
