"""Styles that make outputs open ready in QGIS: raster ``.qml``, vector ``.qml``, GDAL categories."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from geoseg.classes import ClassMap

__all__ = ["category_names_aux_xml", "raster_qml", "vector_qml"]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def raster_qml(classes: ClassMap, *, band: int = 1, opacity: float = 1.0) -> str:
    """A QGIS paletted-raster style: every class value with its colour and name."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.id}" color="{_hex(c.color)}" alpha="255" label={quoteattr(c.name)}/>'
        for c in classes
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="paletted" band="{band}" opacity="{opacity}" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <colorPalette>
{entries}
      </colorPalette>
      <colorramp type="randomcolors" name="[source]"/>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" colorizeOn="0" grayscaleMode="0" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def vector_qml(classes: ClassMap, *, attribute: str = "class_name", outline: bool = True) -> str:
    """A QGIS categorized-polygon style on ``attribute`` (class names), one colour per class."""
    cats = []
    symbols = []
    for i, c in enumerate(classes):
        value = c.name if attribute.endswith("name") else str(c.id)
        cats.append(
            f'      <category render="true" symbol="{i}" value={quoteattr(value)} label={quoteattr(c.name)} type="string"/>'
        )
        r, g, b = c.color
        outline_style = "solid" if outline else "no"
        symbols.append(
            f"""      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="{r},{g},{b},255"/>
            <Option name="outline_color" type="QString" value="35,35,35,255"/>
            <Option name="outline_style" type="QString" value="{outline_style}"/>
            <Option name="outline_width" type="QString" value="0.1"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>"""
        )
    cats_xml = "\n".join(cats)
    sym_xml = "\n".join(symbols)
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr={quoteattr(attribute)} symbollevels="0" enableorderby="0" forceraster="0">
    <categories>
{cats_xml}
    </categories>
    <symbols>
{sym_xml}
    </symbols>
  </renderer-v2>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def category_names_aux_xml(classes: ClassMap, *, band: int = 1) -> str:
    """A GDAL PAM ``.aux.xml`` giving category names, so ``gdalinfo`` and GIS tools name classes."""
    top = max(classes.ids)
    names = {c.id: c.name for c in classes}
    cats = "\n".join(
        f"      <Category>{_xml_text(names.get(v, ''))}</Category>" for v in range(top + 1)
    )
    return f"""<PAMDataset>
  <PAMRasterBand band="{band}">
    <CategoryNames>
{cats}
    </CategoryNames>
  </PAMRasterBand>
</PAMDataset>
"""


def _xml_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
